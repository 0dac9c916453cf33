"""The live controller with a real worker thread and the fake engine, on a fake clock.

The clock only moves when a test moves it, so the scheduler's pause is deterministic however
slow the machine; the worker and its signals are real.
"""

import threading

import numpy as np
import pytest

from sdstudio.core.document import Document
from sdstudio.core.errors import RequestError
from sdstudio.core.live import LivePolicy
from sdstudio.core.request import GenerationRequest, Mode
from sdstudio.engine.events import Cancelled, Started, Step
from sdstudio.engine.fake import FakeEngine
from sdstudio.qt.live import LiveController
from sdstudio.qt.worker import GenerationWorker

POLICY = LivePolicy(min_pause=0.05, max_pause=0.05)
"""A fixed 0.05 s pause (fake seconds)."""


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


class Live:
    """A controller, its worker, a fake clock, and a record of what it said."""

    def __init__(self, qtbot, engine, image) -> None:
        self.qtbot, self.engine, self.image = qtbot, engine, image
        self.clock = Clock()
        self.state = 0
        self.builds = 0
        self.worker = GenerationWorker(lambda: engine, preview_interval=0.0)
        self.worker.start()
        self.controller = LiveController(self.worker, self.build, policy=POLICY, clock=self.clock)
        self.frames: list = []
        self.cleared = 0
        self.failures: list[str] = []
        self.times: list[float] = []
        self.cancelled = 0
        self.controller.frame_ready.connect(self.frames.append)
        self.controller.frame_cleared.connect(self._on_cleared)
        self.controller.failed.connect(self.failures.append)
        self.controller.frame_time.connect(self.times.append)
        self.worker.cancelled.connect(self._on_cancelled)

    def _on_cleared(self) -> None:
        self.cleared += 1

    def _on_cancelled(self) -> None:
        self.cancelled += 1

    def build(self) -> GenerationRequest | None:
        """The state is the prompt and the seed: a frame's request says which state it shows."""
        self.builds += 1
        if self.image is None:
            return None
        return GenerationRequest(
            mode=Mode.IMG2IMG, image=self.image, prompt=f"state {self.state}", seed=self.state
        )

    def change(self, state: int) -> None:
        self.state = state
        self.controller.notify_changed()

    def after_pause(self) -> None:
        """Let the fake clock pass the pause; the armed timer then starts the run."""
        self.clock.t += 1.0

    def wait_idle(self) -> None:
        self.qtbot.waitUntil(lambda: not self.controller.is_busy(), timeout=10000)


@pytest.fixture
def live(qtbot, photo):
    made: list[Live] = []

    def make(engine, image=photo) -> Live:
        made.append(Live(qtbot, engine, image))
        return made[-1]

    yield make
    for one in made:
        assert one.worker.shutdown(5000)


def test_a_burst_of_changes_starts_at_most_two_runs_and_the_last_frame_shows_the_last_state(
    qtbot, live
):
    rig = live(FakeEngine(steps=4, delay=0.02))
    rig.controller.set_enabled(True)
    rig.after_pause()
    with qtbot.waitSignal(rig.worker.started, timeout=5000):
        pass  # the first run (state 0) is in flight
    for k in range(1, 51):  # the clock stands still: the burst comes within the pause
        rig.change(k)
    rig.after_pause()
    rig.wait_idle()
    prompts = [request.prompt for request in rig.engine.requests]
    assert prompts == ["state 0", "state 50"]
    assert rig.controller.current_frame().request.prompt == "state 50"
    assert rig.controller.frame_version == rig.controller.version
    assert [f.request.seed for f in rig.frames] == [0, 50]
    assert len(rig.times) == 2 and rig.times[-1] >= 0


class GatedEngine(FakeEngine):
    """The fake engine, but each run waits after ``Started`` until the test opens the gate once
    (a cancel meanwhile ends it ``Cancelled``)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.gate = threading.Semaphore(0)

    def run(self, request, cancel):
        events = super().run(request, cancel)
        yield next(events)  # Started
        while not self.gate.acquire(timeout=0.005):
            if cancel.is_set():
                yield Cancelled()
                return
        yield from events


def test_a_young_stale_run_is_cancelled_and_shows_no_frame(qtbot, live):
    rig = live(GatedEngine(steps=2))
    rig.controller.set_enabled(True)
    rig.after_pause()
    with qtbot.waitSignal(rig.worker.started, timeout=5000):
        pass
    rig.clock.t += 1.0  # the first frame takes 1 s on the fake clock
    rig.engine.gate.release()
    rig.wait_idle()
    assert rig.times == [pytest.approx(1.0)]
    rig.change(1)
    rig.after_pause()
    with qtbot.waitSignal(rig.worker.started, timeout=5000):
        pass
    rig.clock.t += 0.1  # young: a tenth of the frame time
    with qtbot.waitSignal(rig.worker.cancelled, timeout=5000):
        rig.change(2)
    rig.after_pause()
    with qtbot.waitSignal(rig.worker.started, timeout=5000):
        pass
    rig.engine.gate.release()
    rig.wait_idle()
    assert [r.prompt for r in rig.engine.requests] == ["state 0", "state 1", "state 2"]
    assert [f.request.prompt for f in rig.frames] == ["state 0", "state 2"]
    assert rig.cancelled == 1 and rig.failures == []


def test_an_old_stale_run_finishes_and_its_frame_shows(qtbot, live):
    rig = live(GatedEngine(steps=2))
    rig.controller.set_enabled(True)
    rig.after_pause()
    with qtbot.waitSignal(rig.worker.started, timeout=5000):
        pass
    rig.clock.t += 1.0
    rig.engine.gate.release()
    rig.wait_idle()
    rig.change(1)
    rig.after_pause()
    with qtbot.waitSignal(rig.worker.started, timeout=5000):
        pass
    rig.clock.t += 0.9  # most of a frame done: let it finish
    rig.change(2)
    with qtbot.waitSignal(rig.controller.frame_ready, timeout=5000):
        rig.engine.gate.release()
    assert rig.controller.current_frame().request.prompt == "state 1"  # stale, still shown
    rig.after_pause()
    with qtbot.waitSignal(rig.worker.started, timeout=5000):
        pass
    rig.engine.gate.release()
    rig.wait_idle()
    assert [f.request.prompt for f in rig.frames] == ["state 0", "state 1", "state 2"]
    assert rig.cancelled == 0


def test_switching_off_mid_run_cancels_it_and_clears_the_frame(qtbot, live):
    rig = live(FakeEngine(steps=1))
    rig.controller.set_enabled(True)
    rig.after_pause()
    rig.wait_idle()
    assert len(rig.frames) == 1
    rig.engine.steps, rig.engine.delay = 100, 0.05
    rig.change(1)
    rig.after_pause()
    with qtbot.waitSignal(rig.worker.started, timeout=5000):
        pass
    with qtbot.waitSignal(rig.worker.batch_done, timeout=5000):
        rig.controller.set_enabled(False)
        assert rig.controller.current_frame() is None and rig.cleared == 1
    assert rig.cancelled == 1
    assert len(rig.frames) == 1 and rig.controller.current_frame() is None
    assert not rig.controller.is_busy()
    rig.change(2)  # off: changes start nothing
    rig.after_pause()
    qtbot.wait(50)
    assert len(rig.engine.requests) == 2


def test_keep_hands_the_frame_over_once_and_it_goes_in_as_one_undo_step(qtbot, live, photo):
    rig = live(FakeEngine(steps=2, color=(0, 255, 0)))
    document = Document(photo.copy())
    rig.controller.set_enabled(True)
    rig.after_pause()
    rig.wait_idle()
    shown = rig.controller.current_frame()
    assert shown is rig.frames[-1]
    assert np.array_equal(document.image, photo)  # live never touches the picture
    frame = rig.controller.keep()
    assert frame is shown and rig.cleared == 1
    assert rig.controller.current_frame() is None and rig.controller.keep() is None
    document.apply_patch(frame.box, frame.patch, label="Keep live frame")
    assert np.array_equal(document.image[frame.box.slices], frame.patch)
    document.undo()
    assert np.array_equal(document.image, photo)


def test_a_failed_run_is_reported_and_not_retried_without_a_change(qtbot, live):
    rig = live(FakeEngine(steps=3, fail_at=2))
    rig.controller.set_enabled(True)
    rig.after_pause()
    rig.wait_idle()
    assert rig.failures == ["Fake failure at step 2."] and rig.frames == []
    rig.clock.t += 600
    qtbot.wait(50)
    assert len(rig.engine.requests) == 1 and not rig.controller.is_busy()


def test_a_request_that_cannot_be_built_is_reported_and_nothing_runs(qtbot, live):
    rig = live(FakeEngine())

    def refuse():
        raise RequestError("Strength 0 runs no step: raise the live strength.")

    rig.controller._build = refuse
    rig.controller.set_enabled(True)
    rig.after_pause()
    qtbot.waitUntil(lambda: bool(rig.failures), timeout=5000)
    assert rig.failures == ["Strength 0 runs no step: raise the live strength."]
    assert rig.engine.requests == [] and not rig.controller.is_busy()


def test_no_document_no_run(qtbot, live):
    rig = live(FakeEngine(), image=None)
    rig.controller.set_enabled(True)
    rig.after_pause()
    qtbot.waitUntil(lambda: rig.builds == 1, timeout=5000)
    assert rig.engine.requests == [] and rig.failures == [] and not rig.controller.is_busy()


def test_nothing_runs_until_something_changes(qtbot, live):
    rig = live(FakeEngine(steps=1))
    rig.controller.set_enabled(True)
    rig.after_pause()
    rig.wait_idle()
    rig.clock.t += 600
    qtbot.wait(50)
    assert len(rig.engine.requests) == 1 and rig.builds == 1


class BlockingEngine:
    """Holds its run until the test releases it (or 10 s pass: then ``timed_out``)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.inside = threading.Event()
        self.timed_out = False
        self.requests: list = []

    def run(self, request, cancel):
        self.requests.append(request)
        yield Started(request.mode, 1, None)
        self.inside.set()
        self.timed_out = not self.release.wait(10)
        yield Cancelled() if cancel.is_set() else Step(1, 1)


def test_the_gui_thread_never_waits_for_the_run(qtbot, live):
    engine = BlockingEngine()
    rig = live(engine)
    rig.controller.set_enabled(True)
    rig.after_pause()
    qtbot.waitUntil(engine.inside.is_set, timeout=5000)
    # every call returns while the run is held inside the engine
    rig.change(1)
    rig.controller.keep()
    rig.controller.set_enabled(False)
    rig.controller.set_enabled(True)
    rig.change(2)
    assert not engine.release.is_set() and not engine.timed_out
    engine.release.set()
    rig.after_pause()
    qtbot.waitUntil(lambda: len(engine.requests) == 2, timeout=5000)
    engine.release.set()
    assert not engine.timed_out
