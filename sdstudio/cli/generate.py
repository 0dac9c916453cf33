"""The generation commands (inpaint, img2img, txt2img, remove): the arguments and files into a
request, the engine run with step progress on stderr, the result saved."""

from __future__ import annotations

import argparse
import os
import sys
import threading
from pathlib import Path

from sdstudio.core.errors import SDStudioError
from sdstudio.core.request import (
    Control,
    ControlKind,
    GenerationRequest,
    Mode,
    Scheduler,
    random_seed,
)

PREVIEW_MAX_SIDE = 1024


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
        engine = _fill_engine(args)
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


def _fill_engine(args: argparse.Namespace):
    """The fill engine for ``remove`` without --refine; "lama" with no model fails here, in one
    line saying where to get one, before anything loads."""
    from sdstudio.engine.classical import ClassicalFillEngine

    if args.fill_model is not None and args.fill not in ("lama", "auto"):
        raise SDStudioError(f"--fill-model is for --fill lama or auto, not {args.fill}.")
    folder = args.models_dir
    engine = ClassicalFillEngine(
        args.fill, models_folder=(lambda: folder) if folder else None, fill_model=args.fill_model
    )
    if args.fill == "lama" and engine.lama_model("lama") is None:
        from sdstudio.engine.specialists.lama import MISSING

        raise SDStudioError(MISSING)
    return engine


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
