"""``sdstudio upscale``: make a picture 2x or 4x larger with a learned upscaler (the models
folder's 'upscalers' folder, or --model FILE), tiled so any size fits; --model lanczos (or no
model installed) resizes with Lanczos."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sdstudio.core.errors import SDStudioError


def add_upscale_parser(commands) -> None:
    """The ``upscale`` command's arguments (``commands``: the parser's subparsers)."""
    p = commands.add_parser(
        "upscale",
        help="make a picture 2x or 4x larger with a learned upscaler (Real-ESRGAN...)",
        description="Upscale IMAGE 2x or 4x with an upscaling model (Real-ESRGAN and the other "
        "models spandrel loads), tile by tile; a plain Lanczos resize when none is installed.",
    )
    p.add_argument("image", type=Path)
    p.add_argument("--scale", type=int, required=True, help="2 or 4")
    p.add_argument(
        "--model",
        default=None,
        metavar="REF",
        help="an upscaler file (.safetensors), the name of one in the models folder's "
        "'upscalers' folder, or 'lanczos' for a plain resize (default: the installed upscaler "
        "best suited to --scale)",
    )
    p.add_argument(
        "--tile",
        type=int,
        default=None,
        metavar="PX",
        help="tile side in input pixels (default 256 on the CPU, 512 on a GPU); smaller uses "
        "less memory",
    )
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--models-dir", type=Path, help=argparse.SUPPRESS)
    p.add_argument("-o", "--output", required=True, type=Path, help="the picture to write")


def resolve_model(reference: str | None, models: Path, scale: int) -> Path | None:
    """The upscaler file ``reference`` names (None for Lanczos), checked without loading it:
    a file, a name in the upscalers folder, 'lanczos', or (None) the best installed one."""
    from sdstudio.engine.specialists.loading import SUFFIXES, PickleConsentNeeded, describe
    from sdstudio.engine.specialists.upscale import (
        LANCZOS,
        find_upscaler,
        scan_upscalers,
        upscalers_dir,
    )

    if reference is None:
        return find_upscaler(models, scale)
    if reference.lower() == LANCZOS:
        return None
    path = Path(reference).expanduser()
    if not path.is_file():
        named = [u.path for u in scan_upscalers(models) if u.name.lower() == reference.lower()]
        if not named:
            raise SDStudioError(
                f"No upscaler '{reference}': give a .safetensors file, the name of one in "
                f"{upscalers_dir(models)}, or 'lanczos'."
            )
        path = named[0]
    if path.suffix.lower() not in SUFFIXES:
        raise SDStudioError(f"'{path.name}' is not a model file: use a .safetensors file.")
    info = describe(path)
    if info.needs_conversion:
        raise PickleConsentNeeded(path)
    if info.problem is not None:
        raise SDStudioError(f"Cannot use '{path.name}': {info.problem}")
    if info.purpose not in (None, "upscale"):
        raise SDStudioError(
            f"'{path.name}' is a {info.architecture} model for {info.purpose}, not an upscaler."
        )
    return info.path


def _upscale(args: argparse.Namespace) -> int:
    import time

    from sdstudio import __version__
    from sdstudio.cli.generate import _check_output, _Progress
    from sdstudio.core.imageio import load_picture, save_image
    from sdstudio.core.paths import models_dir
    from sdstudio.engine.specialists.upscale import (
        LANCZOS_NOTE,
        check_scale,
        check_tile,
        describe_choice,
        upscale,
    )

    _check_output(args)
    check_scale(args.scale)
    check_tile(args.tile)
    models = args.models_dir or models_dir()
    model = resolve_model(args.model, models, args.scale)
    picture = load_picture(args.image)
    for note in picture.notes:
        print(f"Note: '{args.image}': {note}.", file=sys.stderr)
    image = picture.array
    height, width = image.shape[:2]
    if model is None and args.model is None:
        print(LANCZOS_NOTE, file=sys.stderr)
    started = time.perf_counter()
    print(f"Upscaling {args.scale}x with {describe_choice(model)} ...", file=sys.stderr, flush=True)
    progress = _Progress()
    result = upscale(
        image, args.scale, model, tile=args.tile, device=args.device, progress=progress.step
    )
    how = f"upscaled {args.scale}x with {describe_choice(model)}"
    if model is not None:
        how += f" (tiles of {args.tile} px)" if args.tile else " (tiled)"
    parameters = f"Upscaled with SD Studio {__version__}; {how}; from {width} x {height}"
    save_image(args.output, result, parameters=parameters, icc_profile=picture.icc_profile)
    seconds = time.perf_counter() - started
    print(
        f"Saved {args.output} ({result.shape[1]} x {result.shape[0]}, {how}; {seconds:.1f} s)",
        file=sys.stderr,
    )
    return 0
