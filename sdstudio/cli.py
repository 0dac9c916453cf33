"""``sdstudio <command>``: headless generation over core + engine.

Every error a person can cause ends with one line on stderr and a non-zero exit; ``--verbose``
adds the traceback for bug reports.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
from pathlib import Path

from sdstudio import __version__
from sdstudio.core.errors import SDStudioError
from sdstudio.core.request import (
    Control,
    ControlKind,
    GenerationRequest,
    Mode,
    Scheduler,
    random_seed,
)

log = logging.getLogger("sdstudio")

PREVIEW_MAX_SIDE = 1024
FILL_METHODS = ("auto", "structure-texture", "patchmatch", "harmonic", "telea", "navier-stokes")
"""sdstudio.engine.fill.METHODS, named here so that building the parser stays cheap."""


def _add_generation_options(parser: argparse.ArgumentParser, *, strength: float | None) -> None:
    parser.add_argument("--prompt", required=True, help="what should be there")
    parser.add_argument("--negative", default="", help="what should not be there")
    parser.add_argument(
        "--model",
        default=None,
        help="hub id (owner/name) or local diffusers folder; default: $SDSTUDIO_MODEL or a "
        "Stable Diffusion 1.5 model",
    )
    parser.add_argument("--steps", type=int, default=20, help="denoising steps (default 20)")
    parser.add_argument("--guidance", type=float, default=7.0, help="CFG scale (default 7)")
    if strength is not None:
        parser.add_argument(
            "--strength",
            type=float,
            default=strength,
            help=f"how much to change, 0-1 (default {strength})",
        )
    parser.add_argument("--seed", type=int, default=None, help="seed (default: random)")
    parser.add_argument(
        "--scheduler",
        default="euler_a",
        help="sampler: " + ", ".join(s.name.lower() for s in Scheduler) + " (default euler_a)",
    )
    parser.add_argument("--previews", type=Path, help="write one preview PNG per step here")
    _add_control_options(parser)
    parser.add_argument(
        "--models-dir",
        type=Path,
        help="models folder: <lora:name:w> tags find LoRAs in its 'loras' folder, embeddings in "
        "its 'embeddings' folder (default: SD Studio's models folder)",
    )


def _add_control_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--controlnet", metavar="REF", help="ControlNet (hub id, folder or .safetensors file)"
    )
    parser.add_argument(
        "--control",
        type=Path,
        metavar="IMAGE",
        help="control image for --controlnet, used as it is (a scribble: light lines on dark), "
        "laid over the picture at its size",
    )
    parser.add_argument(
        "--control-kind",
        choices=[k.value for k in ControlKind],
        default=ControlKind.SCRIBBLE.value,
        help="canny: use the edges of IMAGE; the others use IMAGE as it is (default scribble)",
    )
    for name, default, what in (
        ("strength", 1.0, "how strongly the control steers, 0-2"),
        ("start", 0.0, "fraction of the steps where the control starts"),
        ("end", 1.0, "fraction of the steps where it ends"),
    ):
        parser.add_argument(
            f"--control-{name}", type=float, metavar="F", help=f"{what} (default {default:g})"
        )


def _controls(args: argparse.Namespace) -> tuple[Control, ...]:
    """The --controlnet/--control pair (and its settings) as controls for the request."""
    reference, image = getattr(args, "controlnet", None), getattr(args, "control", None)
    if image is not None and reference is None:
        raise SDStudioError(
            "--control needs --controlnet REF: the ControlNet to steer with (a hub id, a folder "
            "or a .safetensors file)."
        )
    if reference is not None and image is None:
        raise SDStudioError(
            "--controlnet needs --control IMAGE: the control image (a scribble: light lines on "
            "dark)."
        )
    settings = {n: getattr(args, f"control_{n}", None) for n in ("strength", "start", "end")}
    if reference is None:
        given = [f"--control-{n}" for n, value in settings.items() if value is not None]
        if given:
            raise SDStudioError(f"{given[0]} needs --controlnet REF and --control IMAGE.")
        return ()
    from sdstudio.core.imageio import load_image
    from sdstudio.core.pixels import to_rgb8

    pixels = to_rgb8(load_image(image))
    fields = {n: value for n, value in settings.items() if value is not None}
    return (Control(reference, pixels, ControlKind(args.control_kind), **fields),)


def _add_inpaint_area_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mask", required=True, type=Path, help="white (or opaque) = repaint")
    parser.add_argument("--mask-blur", type=int, default=4, help="soft edge in pixels (default 4)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sdstudio",
        description="SD Studio: inpainting, img2img and text-to-image with Stable Diffusion. "
        "'sdstudio' alone opens the editor; 'sdstudio PICTURE' opens it on a picture.",
    )
    parser.add_argument("--version", action="version", version=f"sdstudio {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details and tracebacks")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = commands.add_parser("inpaint", help="repaint the masked part of an image")
    p.add_argument("image", type=Path)
    _add_inpaint_area_options(p)
    _add_generation_options(p, strength=1.0)
    p.add_argument("--padding", type=int, default=32, help="context around the mask (default 32)")
    p.add_argument("--no-color-match", action="store_true", help="skip colour matching")
    p.add_argument("-o", "--output", required=True, type=Path)

    p = commands.add_parser("img2img", help="redraw a whole image guided by a prompt")
    p.add_argument("image", type=Path)
    _add_generation_options(p, strength=0.75)
    p.add_argument("-o", "--output", required=True, type=Path)

    p = commands.add_parser("txt2img", help="make an image from a prompt")
    _add_generation_options(p, strength=None)
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--height", type=int, default=512)
    p.add_argument("-o", "--output", required=True, type=Path)

    p = commands.add_parser("remove", help="remove what the mask covers (no model needed)")
    p.add_argument("image", type=Path)
    _add_inpaint_area_options(p)
    p.add_argument(
        "--fill",
        choices=FILL_METHODS,
        default="auto",
        help="model-free fill: auto (default, best measured: structure-texture, or harmonic for "
        "thin holes), structure-texture (smooth shading + copied texture), patchmatch (copied "
        "texture and shading: better beside other objects), harmonic (smooth), telea or "
        "navier-stokes (OpenCV)",
    )
    p.add_argument(
        "--refine",
        action="store_true",
        help="after the fill, let a model denoise the area partially with a neutral prompt",
    )
    p.add_argument("--model", default=None, help="model for --refine (default: SD 1.5 inpainting)")
    p.add_argument("--strength", type=float, default=0.5, help="--refine strength (default 0.5)")
    p.add_argument("--steps", type=int, default=20, help="--refine steps (default 20)")
    p.add_argument("--seed", type=int, default=None, help="--refine seed (default: random)")
    p.add_argument("--models-dir", type=Path, help=argparse.SUPPRESS)
    p.add_argument("-o", "--output", required=True, type=Path)

    p = commands.add_parser("restore", help="repair scratches, dust and creases (no model needed)")
    p.add_argument("image", type=Path)
    p.add_argument("-o", "--output", required=True, type=Path)
    p.add_argument(
        "--mask", type=Path, help="damage to repair (white = damaged) instead of detecting"
    )
    p.add_argument("--mask-out", type=Path, help="write the proposed damage mask here (to edit)")
    p.add_argument(
        "--sensitivity", type=float, default=0.5, help="damage detection, 0-1 (default 0.5)"
    )
    p.add_argument("--levels", action="store_true", help="stretch the tones (auto levels)")
    p.add_argument("--white-balance", action="store_true", help="correct a colour cast")
    p.add_argument("--denoise", type=float, metavar="STRENGTH", help="denoise, 0-1 (e.g. 0.3)")
    p.add_argument(
        "--model",
        default=None,
        help="redraw large losses (tears, lost corners) with this inpainting model after the "
        "model-free repair; thin damage never needs one",
    )
    p.add_argument(
        "--strength", type=float, default=None, help="how much the model may change, 0-1 (0.6)"
    )
    p.add_argument("--steps", type=int, default=20, help="model steps (default 20)")
    p.add_argument("--seed", type=int, default=None, help="model seed (default: random)")
    p.add_argument("--models-dir", type=Path, help=argparse.SUPPRESS)

    p = commands.add_parser(
        "info",
        help="print how an image was made: AUTOMATIC1111/SD Studio parameters, ComfyUI or InvokeAI",
    )
    p.add_argument("image", type=Path)
    return parser


def _check_output(args: argparse.Namespace) -> None:
    from sdstudio.core.imageio import FORMATS as SAVE_FORMATS

    output: Path = args.output
    if output.suffix.lower() not in SAVE_FORMATS:
        raise SDStudioError(
            f"Cannot write '{output}': use one of {', '.join(sorted(SAVE_FORMATS))}."
        )
    image = getattr(args, "image", None)
    if image is not None and output.resolve() == image.resolve():
        raise SDStudioError(
            f"Refusing to overwrite the input image '{image}': choose another -o file."
        )


def _load_inputs(args: argparse.Namespace):
    from sdstudio.core.imageio import load_image, load_picture
    from sdstudio.core.mask import mask_from_image

    image = None
    if getattr(args, "image", None):
        picture = load_picture(args.image)
        image = picture.array
        for note in picture.notes:  # the picture is not quite what the file held: say so
            print(f"Note: '{args.image}': {note}.", file=sys.stderr)
    mask = None
    if getattr(args, "mask", None) is not None:
        mask = mask_from_image(load_image(args.mask))
        if image is not None and mask.shape != image.shape[:2]:
            raise SDStudioError(
                f"The mask '{args.mask}' is {mask.shape[1]}x{mask.shape[0]} but the image is "
                f"{image.shape[1]}x{image.shape[0]}: make a mask of the same size."
            )
    return image, mask


def _request(args: argparse.Namespace, mode: Mode, image, mask) -> GenerationRequest:
    from sdstudio.engine.models.resolve import DEFAULT_INPAINT_MODEL, DEFAULT_MODEL

    fields: dict = {"mode": mode, "image": image, "mask": mask}
    if mode is Mode.REMOVE and args.refine:  # the engine supplies a neutral prompt
        fields.update(
            model=args.model or os.environ.get("SDSTUDIO_MODEL") or DEFAULT_INPAINT_MODEL,
            steps=args.steps,
            seed=random_seed() if args.seed is None else args.seed,
        )
    elif mode is not Mode.REMOVE:
        default = DEFAULT_INPAINT_MODEL if mode is Mode.INPAINT else DEFAULT_MODEL
        fields.update(
            prompt=args.prompt,
            negative_prompt=args.negative,
            model=args.model or os.environ.get("SDSTUDIO_MODEL") or default,
            steps=args.steps,
            guidance=args.guidance,
            seed=random_seed() if args.seed is None else args.seed,
            scheduler=Scheduler.parse(args.scheduler),
            controls=_controls(args),
        )
    if hasattr(args, "strength"):
        fields["strength"] = args.strength
    if hasattr(args, "mask_blur"):
        fields["mask_blur"] = args.mask_blur
    if hasattr(args, "padding"):
        fields["padding"] = args.padding
    if getattr(args, "no_color_match", False):
        fields["color_match"] = False
    if mode is Mode.TXT2IMG:
        fields.update(width=args.width, height=args.height)
    return GenerationRequest(**fields)


class _Progress:
    """Step i/n on stderr, on one line when stderr is a terminal."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()

    def step(self, index: int, total: int) -> None:
        end = "\r" if self.tty and index < total else "\n"
        if self.tty or index == total:
            print(f"step {index}/{total}", end=end, file=sys.stderr, flush=True)


def _write_preview(folder: Path, event) -> None:
    import cv2

    from sdstudio.core.imageio import save_image

    scale = min(1.0, PREVIEW_MAX_SIDE / max(event.box.width, event.box.height))
    size = (max(1, round(event.box.width * scale)), max(1, round(event.box.height * scale)))
    rgb = cv2.resize(event.rgb, size, interpolation=cv2.INTER_LINEAR)
    save_image(folder / f"step-{event.index:03d}.png", rgb)


def _generate(args: argparse.Namespace, mode: Mode) -> int:
    from sdstudio.core.imageio import save_image

    _check_output(args)
    image, mask = _load_inputs(args)
    request = _request(args, mode, image, mask)
    if mode is Mode.REMOVE and not args.refine:
        from sdstudio.engine.classical import ClassicalFillEngine

        engine = ClassicalFillEngine(method=args.fill)
    else:
        engine = _load_engine(args, request.model, request)
    if getattr(args, "previews", None) is not None:
        try:
            args.previews.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise SDStudioError(
                f"Cannot create the previews folder '{args.previews}': {error.strerror}."
            ) from error
    finished = _run_engine(engine, request, getattr(args, "previews", None))
    if finished is None:
        return 130
    save_image(args.output, finished.composite(image), parameters=finished.parameters)
    seed = "" if mode is Mode.REMOVE and not args.refine else f" (seed {request.seed})"
    print(f"Saved {args.output}{seed}", file=sys.stderr)
    return 0


def _load_engine(args: argparse.Namespace, model: str, request: GenerationRequest | None = None):
    from sdstudio.engine.diffusion.engine import DiffusersEngine

    folder = args.models_dir
    engine = DiffusersEngine(models_folder=(lambda: folder) if folder else None)
    if request is not None and request.controls:  # a mismatch is said before the model loads
        engine.check_controls(request)
    print(f"Loading model {model} ...", file=sys.stderr, flush=True)
    engine.load(model)
    return engine


def _run_engine(engine, request: GenerationRequest, previews: Path | None):
    """Run ``request`` with step progress on stderr; its ``Finished`` event, or None if the
    person pressed Ctrl+C."""
    from sdstudio.engine.events import Cancelled, Failed, Finished, Preview, Step

    progress, cancel = _Progress(), threading.Event()
    events = engine.run(request, cancel)
    try:
        for event in events:
            if isinstance(event, Step):
                progress.step(event.index, event.total)
            elif isinstance(event, Preview) and previews is not None:
                _write_preview(previews, event)
            elif isinstance(event, Finished):
                return event
            elif isinstance(event, Failed):
                raise SDStudioError(event.message)
            elif isinstance(event, Cancelled):
                print("Cancelled.", file=sys.stderr)
                return None
    except KeyboardInterrupt:
        cancel.set()
        print("\nCancelled.", file=sys.stderr)
        return None
    finally:
        close = getattr(events, "close", None)
        if close:
            close()
    raise SDStudioError("The engine stopped without a result.")


def _restore(args: argparse.Namespace) -> int:
    import time

    from sdstudio.core import adjust
    from sdstudio.core.damage import detect_damage
    from sdstudio.core.imageio import FORMATS as SAVE_FORMATS
    from sdstudio.core.imageio import save_image
    from sdstudio.engine.restore import large_losses, model_request, restore

    _check_output(args)
    checks = (
        ("--sensitivity", args.sensitivity),
        ("--denoise", args.denoise),
        ("--strength", args.strength),
    )
    for name, value in checks:
        if value is not None and not 0.0 <= value <= 1.0:
            raise SDStudioError(f"{name} must be between 0 and 1, not {value}.")
    if args.mask_out is not None and args.mask_out.suffix.lower() not in SAVE_FORMATS:
        raise SDStudioError(
            f"Cannot write '{args.mask_out}': use one of {', '.join(sorted(SAVE_FORMATS))}."
        )
    image, mask = _load_inputs(args)
    done = [f"Restored with SD Studio {__version__}"]
    started = time.perf_counter()
    if mask is None:
        print("Detecting damage ...", file=sys.stderr, flush=True)
        report = detect_damage(image, sensitivity=args.sensitivity)
        mask = report.mask
        print(f"Found {report.summary()}", file=sys.stderr)
        done.append(f"damage detected (sensitivity {args.sensitivity:g}): {report.summary()}")
    else:
        share = 100 * float((mask > 0).mean())
        done.append(f"damage mask '{args.mask.name}' ({share:.2f}% of the picture)")
    if args.mask_out is not None:
        save_image(args.mask_out, mask)
        print(f"Saved mask {args.mask_out}", file=sys.stderr)
    look = adjust.is_monochrome(image)
    progress = _Progress()
    result = restore(image, mask, progress=progress.step)
    if mask.any():
        done.append("repaired with the model-free fill" + (f", kept {look}" if look else ""))
    large = large_losses(mask)
    if large.any() and args.model is None:
        print(
            "Large losses were filled from their surroundings, which cannot bring back what was "
            "there; --model MODEL redraws them.",
            file=sys.stderr,
        )
    elif large.any():
        fields = {"model": args.model, "steps": args.steps}
        fields["seed"] = random_seed() if args.seed is None else args.seed
        if args.strength is not None:
            fields["strength"] = args.strength
        request = model_request(result, large, **fields)
        finished = _run_engine(_load_engine(args, request.model), request, None)
        if finished is None:
            return 130
        result = finished.composite(result)
        done.append(
            f"large losses redrawn by {request.model} (strength {request.strength:g}, "
            f"seed {request.seed})" + (f", kept {look}" if look else "")
        )
    if args.levels:
        result = adjust.auto_levels(result)
        done.append("auto levels")
    if args.white_balance:
        result = adjust.white_balance(result)
        done.append("white balance (grey world)")
    if args.denoise:
        print("Denoising ...", file=sys.stderr, flush=True)
        result = adjust.denoise(result, args.denoise)
        done.append(f"denoise {args.denoise:g}")
    save_image(args.output, result, parameters="; ".join(done))
    seconds = time.perf_counter() - started
    print(f"Saved {args.output} ({seconds:.1f} s)", file=sys.stderr)
    return 0


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


COMMANDS = ("inpaint", "img2img", "txt2img", "remove", "restore", "info")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or (len(argv) == 1 and argv[0] not in COMMANDS and not argv[0].startswith("-")):
        from sdstudio.app import main as gui  # `sdstudio` or `sdstudio IMAGE`: the editor

        return gui(argv[0] if argv else None)
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if args.command is None:
        parser.print_help()
        return 0
    try:
        if args.command == "info":
            return _info(args)
        if args.command == "restore":
            return _restore(args)
        return _generate(args, Mode(args.command))
    except KeyboardInterrupt:
        print("\nCancelled.", file=sys.stderr)
        return 130
    except SDStudioError as error:
        log.debug("error", exc_info=True)
        print(f"sdstudio: error: {error}", file=sys.stderr)
        return 1
    except Exception as error:  # noqa: BLE001 - one line for the person, the trace with -v
        if args.verbose:
            log.exception("unexpected error")
        print(
            f"sdstudio: error: {type(error).__name__}: {error} (run with --verbose for details)",
            file=sys.stderr,
        )
        return 1
