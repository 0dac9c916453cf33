import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sdstudio.core.request import ModelFamily  # noqa: E402
from sdstudio.engine.diffusion.preview import DenoisedCapture, LatentPreviewer  # noqa: E402


def test_linear_preview_shape_range_and_family_difference():
    latents = torch.randn(1, 4, 12, 20)
    sd1 = LatentPreviewer(ModelFamily.SD1)(latents)
    sdxl = LatentPreviewer(ModelFamily.SDXL)(latents)
    assert sd1.shape == (12, 20, 3) and sd1.dtype == np.uint8
    assert not np.array_equal(sd1, sdxl)
    # zero latents are mid grey for SD1 (no bias)
    assert (LatentPreviewer(ModelFamily.SD1)(torch.zeros(1, 4, 2, 2)) == 127).all()


class TupleScheduler:
    def step(self, model_output, timestep, sample, return_dict=False):
        return (sample - 1, sample * 0 + 5)


class MultistepScheduler:
    class config:
        algorithm_type = "dpmsolver++"

    def __init__(self):
        self.model_outputs = [None]

    def step(self, model_output, timestep, sample, return_dict=False):
        self.model_outputs = [model_output * 0 + 3]
        return (sample - 1,)


def test_capture_prefers_denoised_prediction():
    latents = torch.zeros(1, 4, 3, 3)
    for scheduler, value in ((TupleScheduler(), 5), (MultistepScheduler(), 3)):
        capture = DenoisedCapture(scheduler)
        assert capture.latents_for_preview(latents) is latents  # nothing captured yet
        scheduler.step(latents, 0, latents, return_dict=False)
        assert float(capture.latents_for_preview(latents).mean()) == value


def test_capture_falls_back_to_latents_of_other_shape():
    scheduler = TupleScheduler()
    capture = DenoisedCapture(scheduler)
    scheduler.step(None, 0, torch.zeros(1, 4, 2, 2))
    latents = torch.ones(1, 4, 3, 3)
    assert capture.latents_for_preview(latents) is latents


def test_capture_keeps_the_step_signature_pipelines_inspect():
    import inspect

    from diffusers import EulerAncestralDiscreteScheduler

    scheduler = EulerAncestralDiscreteScheduler()
    DenoisedCapture(scheduler)
    assert "generator" in inspect.signature(scheduler.step).parameters
