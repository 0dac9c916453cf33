import numpy as np
import pytest

from sdstudio.core.errors import RequestError
from sdstudio.core.region import Box
from sdstudio.core.request import GenerationRequest, Mode, Scheduler


def test_request_is_frozen_and_snapshots_pixels():
    image = np.zeros((8, 8, 3), np.uint8)
    mask = np.full((8, 8), 255, np.uint8)
    request = GenerationRequest(mode=Mode.INPAINT, image=image, mask=mask, seed=3)
    image[:] = 9  # the document goes on changing; the request does not
    assert request.image.max() == 0
    with pytest.raises(ValueError):
        request.image[0, 0, 0] = 1
    with pytest.raises(AttributeError):
        request.seed = 4  # type: ignore[misc]
    assert request.with_(seed=4).seed == 4 and request.seed == 3


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"steps": 0}, "Steps"),
        ({"strength": 0.0}, "Strength"),
        ({"strength": 1.5}, "Strength"),
        ({"seed": -1}, "Seed"),
        ({"guidance": -1.0}, "Guidance"),
        ({"mask": None}, "needs a mask"),
        ({"mask": np.zeros((4, 4), np.uint8)}, "same size"),
        ({"image": None}, "needs an input image"),
        ({"region": Box(0, 0, 20, 5)}, "outside"),
    ],
)
def test_invalid_requests_say_what_is_wrong(changes, message):
    fields = dict(
        mode=Mode.INPAINT, image=np.zeros((8, 8, 3), np.uint8), mask=np.full((8, 8), 255, np.uint8)
    )
    fields.update(changes)
    with pytest.raises(RequestError, match=message):
        GenerationRequest(**fields)


def test_txt2img_size_must_be_multiple_of_8():
    with pytest.raises(RequestError, match="multiple of 8"):
        GenerationRequest(mode=Mode.TXT2IMG, width=500)
    assert GenerationRequest(mode=Mode.TXT2IMG, width=512, height=768).height == 768


def test_random_seed_by_default_and_in_range():
    seeds = {GenerationRequest(mode=Mode.TXT2IMG).seed for _ in range(5)}
    assert len(seeds) > 1 and all(0 <= s < 2**32 for s in seeds)


@pytest.mark.parametrize(
    ("name", "member"),
    [
        ("euler_a", Scheduler.EULER_A),
        ("Euler a", Scheduler.EULER_A),
        ("DPM++ 2M Karras", Scheduler.DPMPP_2M_KARRAS),
        ("dpmpp_2m_karras", Scheduler.DPMPP_2M_KARRAS),
        ("ddim", Scheduler.DDIM),
        ("LCM", Scheduler.LCM),
    ],
)
def test_scheduler_names(name, member):
    assert Scheduler.parse(name) is member


def test_unknown_scheduler_lists_choices():
    with pytest.raises(RequestError, match="euler_a"):
        Scheduler.parse("fastest")


@pytest.mark.parametrize(
    "loras",
    [(("",),), (("lcm", "1"),), (("lcm", True),), (("lcm", 11.0),), ((" ", 1.0),), ("lcm",)],
)
def test_a_lora_is_a_name_and_a_sane_weight(loras):
    with pytest.raises(RequestError, match="A LoRA is a name and a weight"):
        GenerationRequest(mode=Mode.TXT2IMG, loras=loras)


def test_loras_with_weights_are_accepted():
    request = GenerationRequest(mode=Mode.TXT2IMG, loras=(("lcm-lora-sdv1-5", 1.0), ("x", -0.5)))
    assert request.loras[0] == ("lcm-lora-sdv1-5", 1.0)
