import pytest

from sdstudio.core.tokens import CLIP_WINDOW, chunks, estimate_clip_tokens


def test_empty_and_blank_prompts_take_no_tokens():
    assert estimate_clip_tokens("") == 0
    assert estimate_clip_tokens("  \n\t ") == 0


def test_short_words_are_one_token_each():
    assert estimate_clip_tokens("a cat") == 2
    assert estimate_clip_tokens("A   CAT\non a mat") == 5


def test_punctuation_and_digits_count():
    assert estimate_clip_tokens("a cat, a dog") == 5
    assert estimate_clip_tokens("cat,,, dog") == 3  # one run of punctuation is one piece
    assert estimate_clip_tokens("(cat:1.2)") == 7  # "(", cat, ":", 1, ".", 2, ")"
    assert estimate_clip_tokens("1024") == 4  # CLIP splits numbers into single digits


def test_contractions_split_off():
    assert estimate_clip_tokens("it's") == 2
    assert estimate_clip_tokens("we'll") == 2


def test_long_words_count_more():
    assert estimate_clip_tokens("antidisestablishment") == 5  # 20 letters / 4
    assert estimate_clip_tokens("overexposure") > estimate_clip_tokens("photo")
    # frequent long prompt words stay whole
    assert estimate_clip_tokens("masterpiece") == 1


def test_special_tokens_are_one_each():
    assert estimate_clip_tokens("<|startoftext|>a<|endoftext|>") == 3


def test_split_matches_clips_pattern():
    regex = pytest.importorskip("regex")
    from sdstudio.core.tokens import _PIECES

    clip = regex.compile(
        r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
        regex.IGNORECASE,
    )
    for text in [
        "a photo of a cat's hat, 8k, (best quality:1.2) -- snake_case __x__",
        "café über naïve 東京 photo!!! <|endoftext|> we're 42",
    ]:
        text = text.lower()
        assert [m.group() for m in _PIECES.finditer(text)] == clip.findall(text)


def test_chunks():
    assert CLIP_WINDOW == 75
    assert chunks(0) == 1
    assert chunks(75) == 1
    assert chunks(76) == 2
    assert chunks(150) == 2
    assert chunks(151) == 3
