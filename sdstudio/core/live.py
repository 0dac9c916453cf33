"""Live mode's scheduling as plain logic: changes in, "start run N" / "cancel run M" out.

No Qt, no threads, no clock of its own: every call takes ``now`` (seconds, any monotonic clock),
so tests drive it with a fake clock. The caller (``sdstudio.qt.live.LiveController``) turns the
actions into worker calls and reports back what the worker did.

Inputs
    ``changed(state, now)``            a new document/prompt/parameter state (opaque); the
                                       scheduler numbers it (``version``, increasing).
    ``run_started(job_id, now)``       the engine began the run (its ``Started`` event).
    ``run_finished(job_id, now, out)`` the run ended: ``Outcome.FINISHED``, ``CANCELLED`` or
                                       ``FAILED``; the worker is free again.
    ``tick(now)``                      time passed: returns the actions now due.
    ``set_enabled(on, now)``           live on or off; off cancels the run in flight and forgets
                                       the changes not yet run.
Outputs
    ``StartRun(job_id, state, version)`` and ``CancelRun(job_id)``, returned by the calls above.
    ``next_wakeup(now)``: when ``tick`` has something to do next (arm a single-shot timer on it).

Policy
    - One job in flight, from ``StartRun`` until ``run_finished``. Changes that arrive meanwhile
      coalesce: the next run gets the newest state only.
    - A pause after the last change (debounce): ``pause_fraction`` x the median of the recent
      frame times, clamped to [``min_pause``, ``max_pause``] (``min_pause`` before any frame), so a
      slow device gets fewer, later runs. A change stream that never pauses still starts a run
      once the oldest waiting change is ``max_wait_pauses`` pauses old: frames keep arriving while
      the person draws.
    - A change during a run makes it stale. It is cancelled only while young (running for less
      than ``cancel_fraction`` of the median frame time). Never before a frame time is known (the
      first run measures it, and may include warm-up), never twice in a row, and never a run
      started while changes kept coming (the wait ran out, not the pause): such runs finish even
      if stale, so continuous drawing still shows frames.
    - A failed run is not retried: the next run needs a change that came after the failure's
      start, and waits a back-off (``failure_backoff``, doubling per failure in a row up to
      ``max_backoff``; a finished run resets it).
"""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass
from enum import Enum
from typing import Any


class Outcome(Enum):
    FINISHED = "finished"
    CANCELLED = "cancelled"
    FAILED = "failed"


@dataclass(frozen=True)
class StartRun:
    job_id: int
    state: Any
    version: int
    """The number of the change whose state this run renders (versions increase)."""


@dataclass(frozen=True)
class CancelRun:
    job_id: int


Action = StartRun | CancelRun


@dataclass(frozen=True)
class LivePolicy:
    """The scheduler's knobs (seconds)."""

    min_pause: float = 0.02
    max_pause: float = 1.0
    pause_fraction: float = 0.25
    """The pause after the last change, as a fraction of the median frame time."""
    max_wait_pauses: float = 4.0
    """A change waits at most this many pauses, even while changes keep coming."""
    cancel_fraction: float = 0.5
    """A stale run younger than this fraction of the median frame time is cancelled."""
    failure_backoff: float = 1.0
    max_backoff: float = 8.0
    window: int = 5
    """How many recent frame times the median is taken over."""

    def __post_init__(self) -> None:
        if not 0 <= self.min_pause <= self.max_pause:
            raise ValueError("min_pause must be >= 0 and <= max_pause.")
        if self.window < 1 or self.max_wait_pauses < 1:
            raise ValueError("window and max_wait_pauses must be >= 1.")


@dataclass
class _Job:
    job_id: int
    version: int
    issued_at: float
    started_at: float | None = None
    cancel_sent: bool = False
    stale_cancel: bool = False  # cancelled because a newer state came (not by switching off)
    forced: bool = False  # started while changes still came (the wait ran out, not the pause)

    def age(self, now: float) -> float:
        return now - (self.started_at if self.started_at is not None else self.issued_at)


class LiveScheduler:
    """See the module docstring. Starts disabled: call ``set_enabled(True, now)``."""

    def __init__(self, policy: LivePolicy | None = None) -> None:
        self.policy = policy or LivePolicy()
        self.enabled = False
        self._version = 0  # of the newest change
        self._state: Any = None  # the newest change's state
        self._done_version = 0  # the newest version a run was started for
        self._first_waiting: float | None = None  # when the oldest change not yet run came
        self._last_change: float | None = None
        self._job: _Job | None = None
        self._next_job = 1
        self._frame_times: deque[float] = deque(maxlen=self.policy.window)
        self._last_was_cancelled = False
        self._failures = 0
        self._backoff_until = float("-inf")
        self.last_frame_time: float | None = None

    # -- queries ------------------------------------------------------------------------------

    @property
    def version(self) -> int:
        """The newest change's number (0: none yet)."""
        return self._version

    @property
    def in_flight(self) -> int | None:
        """The job id of the run in flight, if any."""
        return None if self._job is None else self._job.job_id

    def waiting(self) -> bool:
        """A change that no run has been started for yet."""
        return self.enabled and self._version > self._done_version

    def busy(self) -> bool:
        """Working or about to: a run in flight or a change waiting for one."""
        return self._job is not None or self.waiting()

    def frame_time(self) -> float | None:
        """The median of the recent frame times (started to finished), None before any."""
        return statistics.median(self._frame_times) if self._frame_times else None

    def pause(self) -> float:
        """The debounce after the last change, from the measured frame time."""
        p = self.policy
        median = self.frame_time()
        if median is None:
            return p.min_pause
        return min(p.max_pause, max(p.min_pause, p.pause_fraction * median))

    def next_wakeup(self, now: float) -> float | None:
        """When ``tick`` may start a run (a time, maybe <= now), or None when nothing waits."""
        if self._job is not None or not self.waiting():
            return None
        assert self._last_change is not None and self._first_waiting is not None
        pause = self.pause()
        due = min(
            self._last_change + pause, self._first_waiting + pause * self.policy.max_wait_pauses
        )
        return max(due, self._backoff_until)

    # -- inputs -------------------------------------------------------------------------------

    def set_enabled(self, enabled: bool, now: float) -> list[Action]:
        actions: list[Action] = []
        if self.enabled == enabled:
            return actions
        self.enabled = enabled
        if not enabled:
            self._done_version = self._version  # forget what waits
            self._first_waiting = self._last_change = None
            self._failures, self._backoff_until = 0, float("-inf")
            if self._job is not None and not self._job.cancel_sent:
                self._job.cancel_sent = True
                actions.append(CancelRun(self._job.job_id))
        return actions

    def changed(self, state: Any, now: float) -> list[Action]:
        """A new state: returns ``CancelRun`` for a young stale run, else nothing (runs start
        from ``tick``, after the pause)."""
        if not self.enabled:
            return []
        self._version += 1
        self._state = state
        self._last_change = now
        if self._first_waiting is None:
            self._first_waiting = now
        job = self._job
        if job is None or job.cancel_sent or job.forced or self._last_was_cancelled:
            return []
        median = self.frame_time()
        if median is not None and job.age(now) < self.policy.cancel_fraction * median:
            job.cancel_sent = job.stale_cancel = True
            return [CancelRun(job.job_id)]
        return []

    def run_started(self, job_id: int, now: float) -> list[Action]:
        if self._job is not None and self._job.job_id == job_id and self._job.started_at is None:
            self._job.started_at = now
        return []

    def run_finished(self, job_id: int, now: float, outcome: Outcome) -> list[Action]:
        """The run ended and the worker is free: returns a ``StartRun`` when one is due now."""
        job = self._job
        if job is None or job.job_id != job_id:
            return []  # not ours, or reported twice
        self._job = None
        self._last_was_cancelled = outcome is Outcome.CANCELLED and job.stale_cancel
        if outcome is Outcome.FINISHED:
            self.last_frame_time = job.age(now)
            self._frame_times.append(self.last_frame_time)
            self._failures, self._backoff_until = 0, float("-inf")
        elif outcome is Outcome.FAILED:
            self._failures += 1
            backoff = self.policy.failure_backoff * 2 ** (self._failures - 1)
            self._backoff_until = now + min(self.policy.max_backoff, backoff)
            # changes that came while the failing run went on were not retried by it; they
            # still wait (a new state may fix the failure), after the back-off.
        return self.tick(now)

    def tick(self, now: float) -> list[Action]:
        wake = self.next_wakeup(now)
        if wake is None or wake > now:
            return []
        assert self._last_change is not None
        forced = now < self._last_change + self.pause()
        job = _Job(self._next_job, self._version, now, forced=forced)
        self._next_job += 1
        self._job = job
        self._done_version = self._version
        self._first_waiting = self._last_change = None
        return [StartRun(job.job_id, self._state, job.version)]
