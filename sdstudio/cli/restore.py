"""``sdstudio restore``: repair scratches, dust and creases, redraw large losses with a model
when one is named, and restore faces (``--faces``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from sdstudio import __version__
from sdstudio.cli.generate import _check_output, _load_engine, _load_inputs, _Progress, _run_engine
from sdstudio.core.errors import SDStudioError
from sdstudio.core.request import random_seed


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
    face_model = _check_faces(args)
    if args.mask_out is not None and args.mask_out.suffix.lower() not in SAVE_FORMATS:
        raise SDStudioError(
            f"Cannot write '{args.mask_out}': use one of {', '.join(sorted(SAVE_FORMATS))}."
        )
    image, mask = _load_inputs(args)
    done = [f"Restored with SD Studio {__version__}"]
    started = time.perf_counter()
    if args.no_repair:
        mask = np.zeros(image.shape[:2], np.uint8)  # nothing to repair: restore() copies
    elif mask is None:
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
    if face_model is not None:
        result = _restore_faces(args, result, face_model, done)
    save_image(args.output, result, parameters="; ".join(done))
    seconds = time.perf_counter() - started
    print(f"Saved {args.output} ({seconds:.1f} s)", file=sys.stderr)
    return 0


def _models(args: argparse.Namespace) -> Path:
    from sdstudio.core.paths import models_dir

    return Path(args.models_dir) if args.models_dir is not None else models_dir()


def _check_faces(args: argparse.Namespace) -> Path | None:
    """The face model ``--faces`` will use (None without ``--faces``), and every face and
    ``--no-repair`` option checked, before anything is loaded."""
    if args.no_repair:
        for name, value in (("--mask", args.mask), ("--mask-out", args.mask_out)):
            if value is not None:
                raise SDStudioError(f"{name} needs the repair: leave out --no-repair.")
        if args.model is not None:
            raise SDStudioError("--model redraws repaired losses: leave out --no-repair.")
    if not args.faces:
        for name in ("face_model", "face_strength"):
            if getattr(args, name) is not None:
                option = "--" + name.replace("_", "-")
                raise SDStudioError(f"{option} needs --faces.")
        if args.no_repair and not (args.levels or args.white_balance or args.denoise):
            raise SDStudioError(
                "--no-repair leaves nothing to do: add --faces, --levels, --white-balance or "
                "--denoise."
            )
        return None
    strength = args.face_strength
    if strength is not None and not 0.0 <= strength <= 1.0:
        raise SDStudioError(f"--face-strength must be between 0 and 1, not {strength}.")
    return _face_model(args.face_model, _models(args))


def _face_model(reference: str | None, models: Path) -> Path:
    """The face restoration model file ``reference`` names (a file, or a name in the
    specialists folder), or the installed one; checked to be one, from its header only."""
    from sdstudio.engine.specialists.faces import MISSING, face_models, is_face_model
    from sdstudio.engine.specialists.loading import (
        PICKLE_SUFFIXES,
        PickleConsentNeeded,
        specialists_dir,
    )

    if reference is None:
        found = face_models(models)
        if not found:
            raise SDStudioError(MISSING)
        return found[0]
    path = Path(reference).expanduser()
    if not path.is_file():
        folder = specialists_dir(models)
        named = [folder / reference, folder / f"{reference}.safetensors"]
        path = next((p for p in named if p.is_file()), path)
    if not path.is_file():
        raise SDStudioError(
            f"No face model '{reference}': give a .safetensors file, or the name of one in "
            f"{specialists_dir(models)}."
        )
    if path.suffix.lower() in PICKLE_SUFFIXES:
        if not path.with_suffix(".safetensors").is_file():
            raise PickleConsentNeeded(path)
        path = path.with_suffix(".safetensors")
    problem = is_face_model(path)
    if problem is not None:
        raise SDStudioError(problem)
    return path


def _restore_faces(args: argparse.Namespace, image, model: Path, done: list[str]):
    from sdstudio.cli.generate import _Progress
    from sdstudio.engine.specialists.face_detect import detect_faces, face_detector
    from sdstudio.engine.specialists.faces import DEFAULT_STRENGTH, restore_faces

    models = _models(args)
    detector = face_detector(models)
    print(f"Finding faces ({detector or 'no detector'}) ...", file=sys.stderr, flush=True)
    faces = detect_faces(image, models=models)
    count = f"{len(faces)} face" + ("" if len(faces) == 1 else "s")
    if not faces:
        print(f"Found no faces ({detector}); the faces step changed nothing.", file=sys.stderr)
        return image
    strength = DEFAULT_STRENGTH if args.face_strength is None else args.face_strength
    print(f"Found {count}; restoring with {model.stem} ...", file=sys.stderr, flush=True)
    result, _ = restore_faces(
        image, model, strength, faces=faces, progress=_Progress().step, models=models
    )
    done.append(f"{count} restored by {model.stem} (strength {strength:g}, found by {detector})")
    return result
