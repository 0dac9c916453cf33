"""``sdstudio upscale``: make a picture 2x or 4x larger with a learned upscaler (the models
folder's 'upscalers' folder, or --model FILE), tiled so any size fits; --model lanczos (or no
model installed) resizes with Lanczos."""

from __future__ import annotations

import argparse
import sys
import threading
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
    refine = p.add_argument_group(
        "SD upscale",
        "--refine then redraws fine detail with Stable Diffusion, tile by tile (img2img at a "
        "low strength; slow without a GPU)",
    )
    refine.add_argument("--refine", action="store_true", help="refine the upscaled picture")
    refine.add_argument(
        "--strength",
        type=float,
        default=None,
        help="how much the refine may change, 0-1 (default 0.3)",
    )
    refine.add_argument("--prompt", default=None, help="what the picture shows (helps the refine)")
    refine.add_argument(
        "--refine-model",
        default=None,
        metavar="REF",
        help="Stable Diffusion model (hub id, folder or .safetensors; default: $SDSTUDIO_MODEL "
        "or Stable Diffusion 1.5)",
    )
    refine.add_argument("--steps", type=int, default=20, help="denoising steps (default 20)")
    refine.add_argument("--seed", type=int, default=0, help="seed for every tile (default 0)")
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


def _check_refine(args: argparse.Namespace) -> None:
    """The refine options, checked (and the model named) before anything loads."""
    import os

    from sdstudio.engine.models.resolve import DEFAULT_MODEL
    from sdstudio.engine.refine import DEFAULT_STRENGTH, check_strength

    if not args.refine:
        extra = [
            flag
            for flag, value in (
                ("--strength", args.strength),
                ("--prompt", args.prompt),
                ("--refine-model", args.refine_model),
            )
            if value is not None
        ]
        if extra:
            raise SDStudioError(f"{', '.join(extra)} only apply with --refine.")
        return
    args.strength = DEFAULT_STRENGTH if args.strength is None else args.strength
    check_strength(args.strength)
    if not 1 <= args.steps <= 1000:
        raise SDStudioError(f"--steps must be between 1 and 1000, not {args.steps}.")
    if int(args.steps * args.strength) < 1:
        raise SDStudioError(
            f"--strength {args.strength} with {args.steps} steps runs no denoising step: raise "
            "one of them."
        )
    args.refine_model = args.refine_model or os.environ.get("SDSTUDIO_MODEL") or DEFAULT_MODEL


def _refined(args: argparse.Namespace, image):
    """The upscaled ``image`` refined by Stable Diffusion tile by tile; None on Ctrl+C."""
    from sdstudio.cli.generate import _load_engine, _Progress
    from sdstudio.engine.refine import DEFAULT_PROMPT, refine
    from sdstudio.engine.streaming import RunCancelled

    engine = _load_engine(args, args.refine_model)
    print(f"Refining at strength {args.strength} ...", file=sys.stderr, flush=True)
    progress, cancel = _Progress(), threading.Event()
    try:
        return refine(
            engine,
            image,
            prompt=args.prompt or DEFAULT_PROMPT,
            strength=args.strength,
            steps=args.steps,
            seed=args.seed,
            model=args.refine_model,
            cancel=cancel,
            progress=progress.step,
        )
    except (KeyboardInterrupt, RunCancelled):
        cancel.set()
        print("\nCancelled.", file=sys.stderr)
        return None


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
    _check_refine(args)
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
    if args.refine:
        result = _refined(args, result)
        if result is None:
            return 130
        how += f", refined by {args.refine_model} at strength {args.strength}"
    parameters = f"Upscaled with SD Studio {__version__}; {how}; from {width} x {height}"
    save_image(args.output, result, parameters=parameters, icc_profile=picture.icc_profile)
    seconds = time.perf_counter() - started
    print(
        f"Saved {args.output} ({result.shape[1]} x {result.shape[0]}, {how}; {seconds:.1f} s)",
        file=sys.stderr,
    )
    return 0
