"""``sdstudio info``: how an image was made (AUTOMATIC1111/SD Studio, ComfyUI or InvokeAI)."""

from __future__ import annotations

import argparse
import sys


def _info(args: argparse.Namespace) -> int:
    from sdstudio.core.imageio import read_texts
    from sdstudio.core.provenance import read_provenance

    texts = read_texts(args.image)
    if texts.get("parameters"):  # AUTOMATIC1111's own text, as written
        print(texts["parameters"])
        return 0
    found = read_provenance(texts)
    if found is None:
        print(f"'{args.image}' holds no generation parameters.", file=sys.stderr)
        return 1
    print(f"Made with {found.generator}")
    for key, value in found.settings.items():
        print(f"{key.replace('_', ' ').capitalize()}: {value}")
    return 0
