import pytest

from sdstudio.core.tokens import estimate_clip_tokens
from sdstudio.engine.diffusion.clip_tokens import clip_tokenizer, count_clip_tokens


def test_known_clip_ids():
    assert clip_tokenizer().encode("a photo of a cat", add_special_tokens=False).ids == [
        320,
        1125,
        539,
        320,
        2368,
    ]
    assert clip_tokenizer().encode("A  Photo OF a CAT", add_special_tokens=False).ids == [
        320,
        1125,
        539,
        320,
        2368,
    ]


@pytest.mark.parametrize(
    "text",
    [
        "a cat",
        "masterpiece, best quality, ultra-detailed photograph of an old lighthouse, 8k",
        "",
    ],
)
def test_counts_are_close_to_the_offline_estimate(text):
    exact = count_clip_tokens(text)
    assert abs(exact - estimate_clip_tokens(text)) <= max(2, exact // 4)


def test_lora_tags_are_not_counted():
    assert count_clip_tokens("<lora:style:0.8> a cat") == count_clip_tokens("a cat") == 2
