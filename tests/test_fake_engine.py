import threading

import numpy as np

from sdstudio.core.request import GenerationRequest, Mode
from sdstudio.engine import Cancelled, Failed, FakeEngine, Finished, Preview, Started, Step


def test_fake_engine_streams_steps_previews_and_a_real_paste_back(photo, edge_mask):
    engine = FakeEngine(steps=3, color=(0, 0, 255))
    request = GenerationRequest(mode=Mode.INPAINT, image=photo, mask=edge_mask, mask_blur=2)
    events = list(engine.run(request, threading.Event()))
    assert isinstance(events[0], Started)
    assert [type(e) for e in events[1:-1]] == [Step, Preview] * 3
    result = events[-1].composite(photo)
    assert (result[edge_mask > 0] == (0, 0, 255)).all()
    assert engine.requests == [request]


def test_fake_engine_cancel_and_failure(photo, edge_mask):
    request = GenerationRequest(mode=Mode.INPAINT, image=photo, mask=edge_mask)
    cancel = threading.Event()
    events = []
    for event in FakeEngine(steps=5, delay=0.001).run(request, cancel):
        events.append(event)
        if isinstance(event, Step) and event.index == 2:
            cancel.set()
    assert isinstance(events[-1], Cancelled) and not any(isinstance(e, Finished) for e in events)
    failed = list(FakeEngine(steps=5, fail_at=2).run(request, threading.Event()))[-1]
    assert isinstance(failed, Failed) and "step 2" in failed.message


def test_fake_engine_txt2img_size():
    request = GenerationRequest(mode=Mode.TXT2IMG, width=64, height=128)
    done = list(FakeEngine(steps=1).run(request, threading.Event()))[-1]
    assert done.composite().shape == (128, 64, 3)
    assert np.array_equal(done.patch[0, 0], (255, 0, 255))
