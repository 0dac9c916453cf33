"""``sdstudio select``: click-to-select from the command line. Segment Anything proposes the mask
of what the points (and box) are on; it is written white-on-black the size of the picture, ready
for ``sdstudio remove --mask``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sdstudio.core.errors import SDStudioError
from sdstudio.core.selection import DEFAULT_GROW, MAX_GROW


def add_select_parser(commands) -> None:
    """The ``select`` command's arguments (``commands``: the parser's subparsers)."""
    p = commands.add_parser(
        "select",
        help="propose the mask of an object from points on it (Segment Anything)",
        description="Write the mask of the object at --point (and/or inside --box) as a white-on-"
        "black PNG the size of IMAGE, e.g. for 'sdstudio remove --mask'.",
    )
    p.add_argument("image", type=Path)
    p.add_argument(
        "--point",
        action="append",
        default=[],
        metavar="X,Y",
        help="a pixel on the object (repeat for more points on it)",
    )
    p.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="X,Y",
        help="a pixel NOT on the object (a negative point: repeat for more)",
    )
    p.add_argument("--box", metavar="X0,Y0,X1,Y1", help="a box around the object")
    p.add_argument(
        "--model",
        default=None,
        help="Segment Anything model: a transformers folder or a hub id already downloaded "
        "(default: $SDSTUDIO_SAM_MODEL, else the one the model library installed)",
    )
    p.add_argument(
        "--grow",
        type=int,
        default=DEFAULT_GROW,
        metavar="PX",
        help=f"grow the mask by PX pixels so the edge and shadow go too (default {DEFAULT_GROW})",
    )
    p.add_argument("--models-dir", type=Path, help=argparse.SUPPRESS)
    p.add_argument("-o", "--output", required=True, type=Path, help="the mask to write (.png)")


def _select(args: argparse.Namespace) -> int:
    import time

    from sdstudio.cli.generate import _check_output
    from sdstudio.core.imageio import load_image, save_image
    from sdstudio.core.selection import Point, Prompt, grow, parse_box, parse_pair
    from sdstudio.engine.specialists.select import load_selector, sam_reference

    _check_output(args)
    points = [Point(*parse_pair(text, "--point")) for text in args.point]
    points += [Point(*parse_pair(text, "--exclude"), positive=False) for text in args.exclude]
    box = parse_box(args.box) if args.box else None
    prompt = Prompt(tuple(points), box)
    if prompt.is_empty:
        raise SDStudioError("Say what to select: --point X,Y on the object, or --box X0,Y0,X1,Y1.")
    if not 0 <= args.grow <= MAX_GROW:
        raise SDStudioError(f"--grow must be between 0 and {MAX_GROW} pixels, not {args.grow}.")
    image = load_image(args.image)
    height, width = image.shape[:2]
    prompt.check(width, height)
    reference = sam_reference(args.model, args.models_dir)
    started = time.perf_counter()
    print(f"Loading {reference} ...", file=sys.stderr, flush=True)
    selector = load_selector(reference)
    print("Reading the picture ...", file=sys.stderr, flush=True)
    selector.embed(image)
    mask = grow(selector.mask(prompt.points, prompt.box), args.grow)
    share = 100.0 * float((mask > 0).mean())
    save_image(args.output, mask)
    seconds = time.perf_counter() - started
    if share == 0.0:
        print("Nothing was selected: try a point nearer the object's middle.", file=sys.stderr)
    print(
        f"Saved {args.output} ({width} x {height}, {share:.1f}% selected, grown by {args.grow} px;"
        f" {seconds:.1f} s)",
        file=sys.stderr,
    )
    return 0
