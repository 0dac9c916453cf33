"""One engine shared by Generate's and live mode's workers: made once, one run at a time."""

import threading
import time

import numpy as np

from sdstudio.core.request import GenerationRequest, Mode
from sdstudio.engine.events import Cancelled, Finished, Started
from sdstudio.engine.fake import FakeEngine
from sdstudio.engine.shared import SharedEngine


class CountingEngine(FakeEngine):
    """A fake engine that records how many runs overlap and whether it was closed."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.running = 0
        self.most = 0
        self.closed = 0
        self.loads: list[str] = []
        self._count = threading.Lock()

    def run(self, request, cancel):
        with self._count:
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            yield from super().run(request, cancel)
        finally:
            with self._count:
                self.running -= 1

    def load(self, reference: str) -> None:
        self.loads.append(reference)

    def close(self) -> None:
        self.closed += 1


def request() -> GenerationRequest:
    return GenerationRequest(mode=Mode.IMG2IMG, image=np.zeros((16, 16, 3), np.uint8), seed=1)


def drain(handle, cancel=None) -> list:
    return list(handle.run(request(), cancel or threading.Event()))


def test_the_engine_is_made_once_and_closed_with_the_last_handle():
    made: list[CountingEngine] = []

    def factory():
        made.append(CountingEngine(steps=2))
        return made[-1]

    shared = SharedEngine(factory)
    first, second = shared.handle_factory()(), shared.handle_factory()()
    assert len(made) == 1 and shared.engine is made[0]
    assert isinstance(drain(first)[-1], Finished) and isinstance(drain(second)[-1], Finished)
    first.close()
    first.close()  # closing twice counts once
    assert made[0].closed == 0, "the other worker still uses it"
    second.close()
    assert made[0].closed == 1 and shared.engine is None


def test_runs_from_two_threads_take_turns():
    engine = CountingEngine(steps=4, delay=0.01)
    shared = SharedEngine(lambda: engine)
    handles = [shared.handle_factory()() for _ in range(2)]
    outcomes: list = []
    threads = [threading.Thread(target=lambda h=h: outcomes.append(drain(h)[-1])) for h in handles]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert [type(o) for o in outcomes] == [Finished, Finished]
    assert engine.most == 1, "two runs overlapped on one engine"


def test_a_run_waiting_for_its_turn_can_be_cancelled():
    engine = CountingEngine(steps=50, delay=0.02)
    shared = SharedEngine(lambda: engine)
    busy, waiting = shared.handle_factory()(), shared.handle_factory()()
    events = busy.run(request(), threading.Event())
    assert isinstance(next(events), Started)  # holds the engine now
    cancel = threading.Event()
    got: list = []
    thread = threading.Thread(target=lambda: got.extend(drain(waiting, cancel)))
    thread.start()
    time.sleep(0.1)
    assert got == [], "it ran while another run held the engine"
    cancel.set()
    thread.join(5)
    assert not thread.is_alive() and got == [Cancelled()]
    events.close()  # an abandoned run gives its turn back
    assert isinstance(drain(waiting)[-1], Finished)


def test_a_load_waits_for_the_run_in_progress():
    engine = CountingEngine(steps=3, delay=0.05)
    shared = SharedEngine(lambda: engine)
    runner, loader = shared.handle_factory()(), shared.handle_factory()()
    events = runner.run(request(), threading.Event())
    next(events)
    thread = threading.Thread(target=loader.load, args=("model-b",))
    thread.start()
    thread.join(0.3)
    assert engine.loads == [], "the load ran in the middle of a run"
    list(events)
    thread.join(5)
    assert engine.loads == ["model-b"]


def test_a_factory_error_reaches_the_worker_that_asked_and_a_later_handle_retries():
    calls = []

    def factory():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("no GPU driver")
        return CountingEngine(steps=1)

    shared = SharedEngine(factory)
    try:
        shared.handle_factory()()
    except RuntimeError as error:
        assert "no GPU driver" in str(error)
    else:
        raise AssertionError("the factory's error was swallowed")
    handle = shared.handle_factory()()
    assert isinstance(drain(handle)[-1], Finished)
