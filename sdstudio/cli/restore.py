"""``sdstudio restore``: repair scratches, dust and creases, and redraw large losses with a model
when one is named."""

from __future__ import annotations

import argparse
import sys

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
