"""Live mode's scheduling as plain logic, driven by a fake clock and a simulated device."""

import math

import pytest

from sdstudio.core.live import CancelRun, LivePolicy, LiveScheduler, Outcome, StartRun

INF = math.inf


class Sim:
    """A fake clock and a device that runs one job at a time in ``steps`` equal steps of
    ``run_time`` seconds in all; a cancel takes effect at the end of the current step."""

    def __init__(self, run_time=0.2, steps=4, policy=None, fail=False):
        self.s = LiveScheduler(policy)
        self.run_time, self.steps, self.fail = run_time, steps, fail
        self.now = 0.0
        self.starts: list[tuple[float, StartRun]] = []
        self.cancels: list[tuple[float, int]] = []
        self.ends: list[tuple[float, int, int, Outcome]] = []  # time, job, version, outcome
        self.run: dict | None = None
        self.apply(self.s.set_enabled(True, 0.0))

    def apply(self, actions):
        for action in actions:
            if isinstance(action, StartRun):
                assert self.run is None, "two jobs in flight"
                self.starts.append((self.now, action))
                self.run = {"start": action, "begin": self.now, "end": self.now + self.run_time}
                self.run["cancelled"] = False
                assert self.s.run_started(action.job_id, self.now) == []
            else:
                assert isinstance(action, CancelRun)
                assert self.run is not None and self.run["start"].job_id == action.job_id
                self.cancels.append((self.now, action.job_id))
                step = self.run_time / self.steps
                done = math.floor((self.now - self.run["begin"]) / step) + 1
                self.run["end"] = min(self.run["end"], self.run["begin"] + done * step)
                self.run["cancelled"] = True

    def change(self, state):
        self.apply(self.s.changed(state, self.now))

    def advance(self, until):
        while True:
            wake = self.s.next_wakeup(self.now)
            end = self.run["end"] if self.run else INF
            nxt = min(INF if wake is None else wake, end)
            if nxt > until:
                break
            self.now = max(self.now, nxt)
            if self.run is not None and self.run["end"] <= self.now:
                run, self.run = self.run, None
                if run["cancelled"]:
                    outcome = Outcome.CANCELLED
                else:
                    outcome = Outcome.FAILED if self.fail else Outcome.FINISHED
                start = run["start"]
                self.ends.append((self.now, start.job_id, start.version, outcome))
                self.apply(self.s.run_finished(start.job_id, self.now, outcome))
            else:
                self.apply(self.s.tick(self.now))
        self.now = max(self.now, until)

    def draw(self, states, every):
        for state in states:
            self.change(state)
            self.advance(self.now + every)

    def starts_after(self, t):
        return [start for when, start in self.starts if when >= t]

    def frames(self):
        return [(when, version) for when, _, version, out in self.ends if out is Outcome.FINISHED]


def warmed(run_time, **kwargs) -> Sim:
    """A simulation whose frame time is measured: three finished runs, then quiet."""
    sim = Sim(run_time=run_time, **kwargs)
    for k in range(3):
        sim.change(f"warm {k}")
        sim.advance(sim.now + 10 * run_time + 5)
    assert len(sim.frames()) == 3
    return sim


@pytest.mark.parametrize("run_time", [0.02, 0.2, 2.0])
@pytest.mark.parametrize("in_flight", [False, True])
def test_a_burst_of_50_changes_starts_at_most_two_runs_and_the_last_sees_the_last_state(
    run_time, in_flight
):
    sim = warmed(run_time)
    if in_flight:  # a run that began just before the burst
        sim.change("before")
        sim.advance(sim.s.next_wakeup(sim.now))
        assert sim.s.in_flight is not None
    burst_begins = sim.now
    sim.draw([f"state {k}" for k in range(50)], every=0.001)
    sim.advance(sim.now + 100)
    started = sim.starts_after(burst_begins)
    assert 1 <= len(started) <= 2
    assert started[-1].state == "state 49"
    assert started[-1].version == sim.s.version
    assert sim.frames()[-1][1] == sim.s.version  # the last frame shows the last state
    assert sim.s.next_wakeup(sim.now) is None and not sim.s.busy()


def test_a_young_stale_run_is_cancelled_and_the_next_run_sees_the_newest_state():
    sim = warmed(1.0)
    sim.change("a")
    sim.advance(sim.s.next_wakeup(sim.now))
    job = sim.s.in_flight
    sim.advance(sim.now + 0.1)  # young: 10% of the frame time
    sim.change("b")
    assert sim.cancels == [(sim.now, job)]
    sim.advance(sim.now + 100)
    assert sim.ends[-2][1:] == (job, sim.ends[-2][2], Outcome.CANCELLED)
    assert sim.starts[-1][1].state == "b"
    assert sim.ends[-1][3] is Outcome.FINISHED


def test_an_old_stale_run_finishes_and_one_more_run_follows_with_the_newest_state():
    sim = warmed(1.0)
    sim.change("a")
    sim.advance(sim.s.next_wakeup(sim.now))
    first = len(sim.starts)
    sim.advance(sim.now + 0.8)  # most of the way through
    sim.draw(["b", "c", "d"], every=0.05)
    assert sim.cancels == []
    sim.advance(sim.now + 100)
    states = [start.state for _, start in sim.starts[first - 1 :]]
    assert states == ["a", "d"]  # b and c coalesced into d's run
    assert [out for *_, out in sim.ends[-2:]] == [Outcome.FINISHED, Outcome.FINISHED]


def test_the_first_run_is_never_cancelled_before_a_frame_time_is_known():
    sim = Sim(run_time=5.0)
    sim.change("a")
    sim.advance(sim.s.next_wakeup(sim.now))
    sim.draw(["b", "c"], every=0.01)
    assert sim.cancels == []


def test_continuous_drawing_still_shows_frames():
    """Changes every 30 ms for 6 s, never pausing: stale runs are not cancelled forever."""
    sim = warmed(0.4)
    begins, frames_before = sim.now, len(sim.frames())
    sim.draw([f"s{k}" for k in range(200)], every=0.03)
    frames = sim.frames()[frames_before:]
    assert len(frames) >= 6  # at least one per second while drawing
    assert all(b > a for (_, a), (_, b) in zip(frames, frames[1:], strict=False))
    assert len(sim.cancels) <= len(frames)  # never two cancels in a row
    assert sim.now - begins == pytest.approx(6.0)


def test_a_change_waits_for_the_pause_then_starts_exactly_on_next_wakeup():
    sim = warmed(0.4)  # pause = 0.25 x 0.4 = 0.1 s
    assert sim.s.pause() == pytest.approx(0.1)
    sim.change("a")
    changed_at = sim.now
    assert sim.s.next_wakeup(sim.now) == pytest.approx(changed_at + 0.1)
    assert sim.s.tick(changed_at + 0.09) == []
    actions = sim.s.tick(changed_at + 0.1)
    assert [type(a) for a in actions] == [StartRun]
    assert actions[0].state == "a"


def test_the_pause_adapts_to_a_slow_measured_frame_time():
    fast, slow, tiny = warmed(0.2), warmed(1.2), warmed(0.01)
    assert fast.s.pause() == pytest.approx(0.05)
    assert slow.s.pause() == pytest.approx(0.3)
    assert tiny.s.pause() == pytest.approx(0.02)  # clamped to min_pause
    assert warmed(10.0).s.pause() == pytest.approx(1.0)  # clamped to max_pause
    for sim in (fast, slow):
        sim.change("a")
        at = sim.now
        sim.advance(at + 5)
        assert sim.starts[-1][0] - at == pytest.approx(sim.s.pause())


def test_the_frame_time_is_a_moving_median_of_recent_runs():
    sim = warmed(0.2)
    sim.run_time = 2.0
    for k in range(3):
        sim.change(k)
        sim.advance(sim.now + 20)
    assert sim.s.frame_time() == pytest.approx(2.0)  # 3 of the 5 in the window are slow
    assert sim.s.last_frame_time == pytest.approx(2.0)


def test_no_run_when_nothing_changed():
    sim = Sim()
    sim.advance(60)
    assert sim.starts == [] and sim.s.next_wakeup(sim.now) is None
    sim.change("a")
    sim.advance(120)
    assert len(sim.starts) == 1  # and none after it
    assert sim.s.tick(500) == [] and not sim.s.busy()


def test_a_change_during_a_run_coalesces_into_one_next_run():
    sim = warmed(1.0)
    sim.change("a")
    sim.advance(sim.s.next_wakeup(sim.now) + 0.7)
    sim.draw(["b", "c", "d", "e"], every=0.01)
    assert sim.s.in_flight is not None  # "a" still runs
    sim.advance(sim.now + 100)
    assert [start.state for _, start in sim.starts[-2:]] == ["a", "e"]


def test_a_failed_run_is_not_retried_without_a_new_change():
    sim = Sim(fail=True)
    sim.change("a")
    sim.advance(600)
    assert len(sim.starts) == 1 and sim.ends[-1][3] is Outcome.FAILED
    assert sim.s.next_wakeup(sim.now) is None


def test_after_failures_the_next_run_waits_a_growing_back_off():
    """Changes keep coming and every run fails: the runs thin out, 1, 2, 4, 8, 8 s apart."""
    policy = LivePolicy(failure_backoff=1.0, max_backoff=8.0)
    sim = Sim(run_time=0.1, fail=True, policy=policy)
    sim.draw([f"s{k}" for k in range(1000)], every=0.05)
    ends = [when for when, *_ in sim.ends]
    starts = [when for when, _ in sim.starts]
    gaps = [start - end for start, end in zip(starts[1:], ends, strict=False)]
    assert gaps[:5] == pytest.approx([1.0, 2.0, 4.0, 8.0, 8.0], abs=0.06)
    assert len(starts) < 10  # 50 s of changes


def test_a_finished_run_resets_the_back_off():
    sim = Sim(run_time=0.1, fail=True)
    for k in range(4):  # four failures in a row: the next back-off would be 8 s
        sim.change(k)
        sim.advance(sim.now + 30)
    sim.fail = False
    sim.change("ok")
    sim.advance(sim.now + 30)
    sim.fail = True
    sim.draw(["fails", "after it"], every=0.5)
    sim.advance(sim.now + 30)
    assert sim.starts[-1][0] - sim.ends[-2][0] == pytest.approx(1.0)


def test_switching_off_cancels_the_run_in_flight_and_starts_nothing_more():
    sim = warmed(1.0)
    sim.change("a")
    sim.advance(sim.s.next_wakeup(sim.now) + 0.8)  # old: a change would not cancel it
    job = sim.s.in_flight
    sim.change("b")
    assert sim.cancels == []
    sim.apply(sim.s.set_enabled(False, sim.now))
    assert sim.cancels == [(sim.now, job)]
    sim.change("c")  # ignored while off
    count = len(sim.starts)
    sim.advance(sim.now + 100)
    assert len(sim.starts) == count and sim.ends[-1][3] is Outcome.CANCELLED
    assert not sim.s.busy()
    sim.apply(sim.s.set_enabled(True, sim.now))  # on again: what changed while off is not run
    sim.advance(sim.now + 100)
    assert len(sim.starts) == count


def test_switching_on_again_waits_for_the_cancelled_run_then_runs_a_new_change():
    sim = warmed(1.0, steps=1)  # the cancel takes effect at the end of the run
    sim.change("a")
    sim.advance(sim.s.next_wakeup(sim.now) + 0.1)
    job = sim.s.in_flight
    sim.apply(sim.s.set_enabled(False, sim.now))
    sim.apply(sim.s.set_enabled(True, sim.now))
    sim.change("b")
    assert sim.s.in_flight == job  # still winding down: one job in flight
    sim.advance(sim.now + 100)
    assert sim.starts[-1][1].state == "b" and sim.ends[-1][3] is Outcome.FINISHED


def test_reports_about_unknown_jobs_are_ignored():
    s = LiveScheduler()
    s.set_enabled(True, 0.0)
    assert s.run_finished(99, 1.0, Outcome.FINISHED) == []
    s.changed("a", 1.0)
    (start,) = s.tick(2.0)
    assert s.run_started(99, 2.0) == []
    assert s.run_finished(99, 3.0, Outcome.FINISHED) == []
    assert s.in_flight == start.job_id and s.frame_time() is None
    s.run_finished(start.job_id, 3.0, Outcome.FINISHED)
    assert s.run_finished(start.job_id, 4.0, Outcome.FINISHED) == []  # reported twice
    assert s.frame_time() == pytest.approx(1.0)  # from the tick: run_started came for 99 only


def test_a_policy_with_impossible_bounds_is_refused():
    with pytest.raises(ValueError):
        LivePolicy(min_pause=2.0, max_pause=1.0)
