"""An offline estimate of how many CLIP tokens a prompt takes (no tokenizer files needed).

Stable Diffusion's text encoder sees 77 positions: a start token, 75 prompt tokens and an end
token. ``estimate_clip_tokens`` splits text the way CLIP's pre-tokenizer does and then guesses
how many byte-pair pieces each word becomes: one for a short or common word, about one per four
letters for a long one, one per digit and one per run of punctuation. It is an **estimate**:
the real BPE count can differ by a few tokens, mostly on rare or long words.
"""

from __future__ import annotations

import math
import re

CLIP_WINDOW = 75
"""Prompt tokens per encoder window (77 positions less the start and end tokens)."""

SHORT_WORD = 7
"""Words up to this many letters are counted as one token (most are in CLIP's vocabulary)."""

# CLIP's pattern with the ``regex`` module's classes spelled for ``re``:
# \p{L}+ -> [^\W\d_]+ (word characters that are neither digits nor underscore)
# \p{N}  -> \d (decimal digits; other numerals such as ² or ½ fall in with letters here)
# [^\s\p{L}\p{N}]+ -> runs of anything else that is not white space (underscore included)
_PIECES = re.compile(
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|(?P<word>[^\W\d_]+)|\d"
    r"|(?:_|[^\w\s])+",
    re.IGNORECASE,
)

# Long words frequent in prompts that CLIP's vocabulary holds whole (one token each).
COMMON_LONG_WORDS = frozenset(
    {
        "background",
        "beautiful",
        "cinematic",
        "detailed",
        "illustration",
        "landscape",
        "lighting",
        "masterpiece",
        "painting",
        "photograph",
        "portrait",
        "realistic",
        "standing",
        "watercolor",
    }
)


def _word_tokens(word: str) -> int:
    if len(word) <= SHORT_WORD or word in COMMON_LONG_WORDS:
        return 1
    return math.ceil(len(word) / 4)


def estimate_clip_tokens(text: str) -> int:
    """About how many CLIP BPE tokens ``text`` becomes, start and end tokens not counted."""
    total = 0
    for match in _PIECES.finditer(" ".join(text.lower().split())):
        if match.lastgroup == "word":
            total += _word_tokens(match.group())
        else:
            total += 1  # a digit, a contraction, a run of punctuation or a special token
    return total


def chunks(count: int) -> int:
    """How many 75-token encoder windows ``count`` tokens need (at least one)."""
    return max(1, math.ceil(count / CLIP_WINDOW))
