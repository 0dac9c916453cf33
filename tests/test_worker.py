"""The generation worker thread: event order, lazy engine, cancel, failures, throttling, shutdown."""

import threading

import numpy as np
import pytest
from PySide6 import QtGui
from PySide6.QtCore import QObject
from PySide6.QtGui import QImage

from sdstudio.core.errors import ModelError
from sdstudio.core.region import Box
from sdstudio.core.request import GenerationRequest, Mode
from sdstudio.engine.events import Finished, Preview, Started
from sdstudio.engine.fake import FakeEngine
from sdstudio.qt import worker as worker_module
from sdstudio.qt.worker import GenerationWorker, preview_image

SIGNALS = (
    "started",
    "step",
    "preview",
    "finished",
    "cancelled",
    "failed",
    "batch_done",
    "model_loaded",
    "busy_changed",
)


class Recorder:
    """Every signal of a worker as (name, args), and the threads they were delivered on."""

    def __init__(self, worker: GenerationWorker) -> None:
        self.events: list[tuple[str, tuple]] = []
        self.threads: set[int] = set()
        for name in SIGNALS:
            getattr(worker, name).connect(lambda *args, name=name: self._record(name, args))

    def _record(self, name: str, args: tuple) -> None:
        self.threads.add(threading.get_ident())
        self.events.append((name, args))

    def names(self, *, without: tuple[str, ...] = ()) -> list[str]:
        return [name for name, _ in self.events if name not in without]

    def args(self, name: str) -> list[tuple]:
        return [args for n, args in self.events if n == name]


@pytest.fixture
def make_worker(qtbot):
    workers: list[GenerationWorker] = []

    def make(factory, **kwargs) -> tuple[GenerationWorker, Recorder]:
        worker = GenerationWorker(factory, **kwargs)
        recorder = Recorder(worker)
        workers.append(worker)
        worker.start()
        return worker, recorder

    yield make
    for worker in workers:
        assert worker.shutdown(5000), "the worker thread did not stop"


@pytest.fixture
def request_(photo, edge_mask) -> GenerationRequest:
    return GenerationRequest(mode=Mode.INPAINT, image=photo, mask=edge_mask, seed=1)


def run_batch(qtbot, worker, requests, timeout=10000):
    with qtbot.waitSignal(worker.batch_done, timeout=timeout):
        worker.submit(requests)


def test_a_batch_of_two_arrives_in_order_on_the_gui_thread(qtbot, make_worker, request_):
    engine = FakeEngine(steps=3, color=(0, 0, 255))
    worker, rec = make_worker(lambda: engine, preview_interval=0.0)  # no throttling here
    second = request_.with_(seed=2)
    run_batch(qtbot, worker, [request_, second])
    qtbot.waitUntil(lambda: rec.names()[-1:] == ["busy_changed"])

    one_run = ["started"] + ["step", "preview"] * 3 + ["finished"]
    assert rec.names() == ["busy_changed", *one_run, *one_run, "batch_done", "busy_changed"]
    assert rec.args("busy_changed") == [(True,), (False,)]
    assert rec.args("step") == [(1, 3), (2, 3), (3, 3)] * 2
    started = [args[0] for args in rec.args("started")]
    assert all(isinstance(s, Started) and s.total_steps == 3 for s in started)
    finished = [args[0] for args in rec.args("finished")]
    assert [f.request for f in finished] == [request_, second]
    assert all(isinstance(f, Finished) and f.box == started[0].box for f in finished)
    assert all(box == started[0].box for _, box in rec.args("preview"))
    assert rec.threads == {threading.get_ident()}  # queued to the GUI thread
    assert engine.requests == [request_, second]
    assert not worker.is_busy()


def test_is_busy_from_submit_until_the_batch_is_done(qtbot, make_worker, request_):
    worker, rec = make_worker(lambda: FakeEngine(steps=5, delay=0.02))
    assert not worker.is_busy()
    with qtbot.waitSignal(worker.batch_done, timeout=5000):
        worker.submit([request_])
        assert worker.is_busy()
    qtbot.waitUntil(lambda: rec.args("busy_changed") == [(True,), (False,)])
    assert not worker.is_busy()


def test_the_engine_is_created_lazily_on_the_worker_thread_once(qtbot, make_worker, request_):
    made_on: list[int] = []

    def factory():
        made_on.append(threading.get_ident())
        return FakeEngine(steps=2)

    worker, _ = make_worker(factory)
    qtbot.wait(50)
    assert made_on == []  # not at start-up
    run_batch(qtbot, worker, [request_])
    run_batch(qtbot, worker, [request_])
    assert len(made_on) == 1
    assert made_on[0] != threading.get_ident()


def test_cancel_mid_run_gives_cancelled_and_drops_the_rest_of_the_batch(
    qtbot, make_worker, request_
):
    engine = FakeEngine(steps=20, delay=0.05)
    worker, rec = make_worker(lambda: engine)
    with qtbot.waitSignal(worker.batch_done, timeout=10000):
        worker.submit([request_, request_.with_(seed=2), request_.with_(seed=3)])
        qtbot.waitUntil(lambda: (3, 20) in rec.args("step"), timeout=5000)
        worker.cancel()
    names = rec.names()
    assert names.count("cancelled") == 1 and "finished" not in names and "failed" not in names
    assert len(rec.args("step")) < 20
    assert engine.requests == [request_]  # the other two never ran


def test_cancel_drops_waiting_batches_but_not_later_ones(qtbot, make_worker, request_):
    engine = FakeEngine(steps=10, delay=0.05)
    worker, rec = make_worker(lambda: engine)
    worker.submit([request_])
    worker.submit([request_.with_(seed=2)])  # waiting behind the first
    qtbot.waitUntil(lambda: len(rec.args("step")) >= 1, timeout=5000)
    worker.cancel()
    qtbot.waitUntil(lambda: rec.names().count("batch_done") == 2, timeout=5000)
    assert rec.names().count("cancelled") == 2 and "finished" not in rec.names()
    assert engine.requests == [request_]

    later = request_.with_(seed=3, steps=2)
    run_batch(qtbot, worker, [later])  # a cancel while idle is over: this one runs
    assert rec.args("finished")[-1][0].request is later


def test_a_result_that_arrives_after_cancel_is_not_delivered(qtbot, make_worker, request_):
    class LateEngine:
        """Finishes even though cancel was set: the cancel raced the end of the run."""

        def run(self, request, cancel):
            box = Box(0, 0, 8, 8)
            yield Started(request.mode, 1, box)
            assert cancel.wait(5)
            yield Finished(np.zeros((8, 8, 3), np.uint8), box, "", request)

    worker, rec = make_worker(LateEngine)
    with qtbot.waitSignal(worker.batch_done, timeout=10000):
        with qtbot.waitSignal(worker.started, timeout=5000):
            worker.submit([request_])
        worker.cancel()
    assert rec.names(without=("busy_changed",)) == ["started", "cancelled", "batch_done"]


def test_a_failing_engine_gives_failed_with_its_message(qtbot, make_worker, request_):
    engine = FakeEngine(steps=5, fail_at=2)
    worker, rec = make_worker(lambda: engine)
    run_batch(qtbot, worker, [request_, request_.with_(seed=2)])
    assert rec.args("failed") == [("Fake failure at step 2.",)]
    assert "finished" not in rec.names()
    assert len(engine.requests) == 1  # a failure ends the batch


class RaisingEngine:
    def __init__(self) -> None:
        self.calls = 0

    def run(self, request, cancel):
        self.calls += 1
        if self.calls == 1:
            yield Started(request.mode, 2, Box(0, 0, 8, 8))
            raise RuntimeError("tensor on fire")
        yield from FakeEngine(steps=2).run(request, cancel)

    def load(self, reference):
        raise ModelError(f"No model at '{reference}': check the path or download it first.")


def test_an_engine_that_raises_fails_the_run_and_the_worker_goes_on(qtbot, make_worker, request_):
    worker, rec = make_worker(RaisingEngine)
    run_batch(qtbot, worker, [request_])
    assert rec.args("failed") == [("Generation failed: RuntimeError: tensor on fire",)]
    run_batch(qtbot, worker, [request_])  # the thread survived
    assert len(rec.args("finished")) == 1

    with qtbot.waitSignal(worker.failed, timeout=5000) as blocker:
        worker.load_model("nowhere")
    assert blocker.args == ["No model at 'nowhere': check the path or download it first."]
    assert "model_loaded" not in rec.names()


def test_a_failing_factory_gives_failed_and_is_tried_again(qtbot, make_worker, request_):
    attempts = []

    def factory():
        attempts.append(1)
        if len(attempts) == 1:
            raise ImportError("No module named 'torch'")
        return FakeEngine(steps=1)

    worker, rec = make_worker(factory)
    run_batch(qtbot, worker, [request_])
    (message,) = rec.args("failed")[0]
    assert message == "Could not start the generation engine: ImportError: No module named 'torch'"
    assert "finished" not in rec.names()
    run_batch(qtbot, worker, [request_])
    assert len(rec.args("finished")) == 1 and len(attempts) == 2


def test_load_model_without_a_load_method_reports_loaded(qtbot, make_worker):
    worker, _ = make_worker(lambda: FakeEngine())
    with qtbot.waitSignal(worker.model_loaded, timeout=5000) as blocker:
        worker.load_model("fake-model")
    assert blocker.args == ["fake-model"]


def test_previews_are_throttled_but_the_last_one_arrives(qtbot, make_worker, request_):
    """With an interval longer than the run, only the first preview and the last one pass
    (the pacing itself is tested on a fake clock below: no test depends on machine speed)."""
    worker, rec = make_worker(
        lambda: FakeEngine(steps=200, color=(10, 200, 30)), preview_interval=60.0
    )
    run_batch(qtbot, worker, [request_])
    assert len(rec.args("step")) == 200  # steps are not throttled
    previews = rec.args("preview")
    assert len(previews) == 2
    names = rec.names(without=("step", "busy_changed"))
    assert names[-3:] == ["preview", "finished", "batch_done"]
    last = previews[-1][0]
    assert last.pixelColor(4, 4).getRgb()[:3] == (10, 200, 30)  # step 200's shade


@pytest.mark.parametrize("step_ms", [10, 20, 31, 50])
def test_the_throttle_paces_previews_at_about_30_a_second(monkeypatch, step_ms):
    clock = [0.0]
    monkeypatch.setattr(worker_module.time, "monotonic", lambda: clock[0])
    sent: list[int] = []
    throttle = worker_module._PreviewThrottle(lambda p: sent.append(p.index), 1 / 30)
    box, rgb = Box(0, 0, 8, 8), np.zeros((8, 8, 3), np.uint8)
    for i in range(1, 101):
        throttle.offer(Preview(i, 100, rgb, box))
        clock[0] += step_ms / 1000
    assert sent[0] == 1 and sent[-1] == 100
    budget = 30 * 100 * step_ms / 1000  # 30 a second over the run
    # at most the budget (+ the first and the always-sent last), and close to it: steps a
    # little faster than 30 a second (31 ms) must not be halved to every other one
    assert min(100, budget) - 5 <= len(sent) <= min(100, budget + 2)
    assert (np.diff(sent)[:-1] * step_ms).min() >= 1000 / 30 / 2  # never closer than half


def test_a_dropped_last_preview_is_flushed_before_finished(qtbot, make_worker, request_):
    box = Box(0, 0, 8, 8)
    script = [
        Started(Mode.INPAINT, 5, box),
        *(Preview(i, 5, np.full((8, 8, 3), i * 10, np.uint8), box) for i in (1, 2, 3)),
        Finished(np.zeros((8, 8, 3), np.uint8), box, "", request_),
    ]
    worker, rec = make_worker(lambda: FakeEngine(script=script), preview_interval=60.0)
    run_batch(qtbot, worker, [request_])
    shades = [image.pixelColor(0, 0).red() for image, _ in rec.args("preview")]
    assert shades == [10, 30]  # 2 dropped; 3 held back, then delivered before finished
    assert rec.names(without=("busy_changed",))[-2:] == ["finished", "batch_done"]


def test_previews_are_qimages_that_own_their_pixels_and_no_pixmap_is_made(
    qtbot, make_worker, request_, monkeypatch
):
    made_on: list[int] = []

    class SpyPixmap(QtGui.QPixmap):
        def __init__(self, *args, **kwargs):
            made_on.append(threading.get_ident())
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(QtGui, "QPixmap", SpyPixmap)
    worker, rec = make_worker(lambda: FakeEngine(steps=3, color=(200, 100, 50)))
    run_batch(qtbot, worker, [request_])
    images = [image for image, _ in rec.args("preview")]
    assert images and all(type(image) is QImage for image in images)
    assert all(image.size().toTuple() == (8, 8) for image in images)
    assert images[-1].pixelColor(7, 7).getRgb()[:3] == (200, 100, 50)
    assert made_on == []


def test_preview_image_copies_the_pixels():
    rgb = np.zeros((4, 6, 3), np.uint8)
    rgb[1, 2] = (1, 2, 3)
    image = preview_image(rgb)
    rgb[1, 2] = (9, 9, 9)
    del rgb
    assert (image.width(), image.height()) == (6, 4)
    assert image.pixelColor(2, 1).getRgb()[:3] == (1, 2, 3)
    odd = preview_image(np.full((3, 5, 3), 7, np.uint8)[:, ::-1])  # not contiguous, odd width
    assert odd.pixelColor(4, 2).getRgb()[:3] == (7, 7, 7)


def test_shutdown_during_a_run_cancels_it_instead_of_waiting_for_it(qtbot, request_):
    """Shutdown stops the run at its next step: the engine sees the cancel, the rest of the run
    and of the batch never happen (a shutdown that waited would let all 200 steps run)."""
    engine = FakeEngine(steps=200, delay=0.05)  # a 10 s run, twice
    outcomes: list[str] = []

    def run(request, cancel):
        for event in FakeEngine.run(engine, request, cancel):
            outcomes.append(type(event).__name__)
            yield event

    engine.run = run
    worker = GenerationWorker(lambda: engine)
    worker.start()
    with qtbot.waitSignal(worker.step, timeout=5000):
        worker.submit([request_, request_])
    assert worker.shutdown()
    assert not worker.is_running() and worker._thread.isFinished()
    assert outcomes[-1] == "Cancelled" and "Finished" not in outcomes
    assert 1 <= outcomes.count("Step") < 200
    assert len(engine.requests) == 1  # the second request of the batch never started
    assert worker.shutdown()  # twice is fine
    with pytest.raises(RuntimeError):
        worker.submit([request_])


def test_a_shutdown_that_times_out_reports_it_and_keeps_the_thread_alive(qtbot, request_):
    release = threading.Event()

    class StuckEngine(FakeEngine):
        def load(self, reference):
            release.wait(10)  # a load cannot be cancelled

    worker = GenerationWorker(lambda: StuckEngine())
    worker.start()
    with qtbot.waitSignal(worker.busy_changed, timeout=5000):
        worker.load_model("big")
    assert worker.shutdown(timeout_ms=100) is False
    assert worker.is_running()
    assert any(thread is worker._thread for thread in worker_module._abandoned)
    release.set()
    qtbot.waitUntil(lambda: not worker.is_running(), timeout=5000)
    assert worker.shutdown()


def test_deleting_the_parent_mid_run_stops_the_thread(qtbot, request_):
    parent = QObject()
    worker = GenerationWorker(lambda: FakeEngine(steps=200, delay=0.05), parent)
    thread = worker._thread
    worker.start()
    with qtbot.waitSignal(worker.step, timeout=5000):
        worker.submit([request_])
    del worker
    parent.deleteLater()
    qtbot.waitUntil(lambda: thread.isFinished(), timeout=5000)


def test_shutdown_when_never_started():
    made = []
    worker = GenerationWorker(lambda: made.append(1))
    assert worker.shutdown() and worker.shutdown()
    assert made == []


def test_shutdown_closes_the_engine_on_the_worker_thread(qtbot, request_):
    closed_on: list[int] = []

    class ClosingEngine(FakeEngine):
        def close(self):
            closed_on.append(threading.get_ident())

    worker = GenerationWorker(lambda: ClosingEngine(steps=1))
    worker.start()
    run_batch(qtbot, worker, [request_])
    assert worker.shutdown()
    assert len(closed_on) == 1 and closed_on[0] != threading.get_ident()


def test_end_to_end_with_the_diffusers_engine(
    qtbot, make_worker, sd1_inpaint_model, photo, edge_mask
):
    def factory():
        import torch

        from sdstudio.engine.diffusion.engine import DiffusersEngine
        from sdstudio.engine.diffusion.pipelines import PipelineCache

        return DiffusersEngine(PipelineCache(device="cpu", dtype=torch.float32))

    worker, rec = make_worker(factory)
    with qtbot.waitSignal(worker.model_loaded, timeout=60000):
        worker.load_model(sd1_inpaint_model)
    request = GenerationRequest(
        mode=Mode.INPAINT,
        image=photo,
        mask=edge_mask,
        model=sd1_inpaint_model,
        steps=2,
        seed=1,
        strength=1.0,
    )
    run_batch(qtbot, worker, [request], timeout=60000)
    assert "failed" not in rec.names(), rec.args("failed")
    assert rec.args("step") == [(1, 2), (2, 2)]
    (result,) = (args[0] for args in rec.args("finished"))
    assert result.request is request
    assert result.patch.shape[:2] == (result.box.height, result.box.width)
    composite = result.composite(photo)
    assert not np.array_equal(composite[edge_mask > 0], photo[edge_mask > 0])  # it painted
    image, box = rec.args("preview")[-1]
    assert isinstance(image, QImage) and not image.isNull() and box == result.box
