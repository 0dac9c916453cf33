"""Decoding the latents ourselves, so a bad decode is caught and decoded again, never pasted.

The pipeline is asked for latents (``output_type="latent"``) and the VAE decode it would have run
is repeated here, to the letter (SD1's ``latents / scaling_factor``; SDXL's ``force_upcast``,
``latents_mean``/``latents_std`` and watermark), then ``image_processor.postprocess``: the result
equals ``output_type="np"``. A NaN or all-black image from a half-precision VAE is decoded again
in fp32; a run that is still bad fails. Both the denoising and the decode run under the
out-of-memory ladder of ``devices``, so an out-of-memory decode does not redo the denoising.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from sdstudio.core.errors import GenerationError
from sdstudio.engine.diffusion.devices import DevicePlan, applied_plan, run_with_ladder

log = logging.getLogger(__name__)


class ImageFiltered(GenerationError):
    """The safety checker flagged the image: show it as "filtered", never paste it."""


def _problem(images: np.ndarray) -> str | None:
    if not np.isfinite(images).all():
        return "NaN"
    if any(float(image.max()) < 1.0 / 255.0 for image in images):
        return "black"
    return None


def _decode(pipe: Any, latents: Any, full_precision: bool) -> tuple[Any, bool]:
    """The VAE decode of the pipeline's own ``__call__`` (its SD1 or SDXL branch): the image
    tensor, and whether the VAE ran in fp32. ``full_precision`` forces fp32."""
    import torch
    from diffusers.utils.torch_utils import get_module_execution_device

    vae, config = pipe.vae, pipe.vae.config
    sdxl = hasattr(pipe, "watermark")  # only the SDXL pipelines carry a watermarker
    original = vae.dtype
    upcast = original != torch.float32 and (
        full_precision or (sdxl and original == torch.float16 and config.force_upcast)
    )
    if upcast:
        vae.to(dtype=torch.float32)
    try:
        z = latents.to(dtype=vae.dtype)
        mean, std = getattr(config, "latents_mean", None), getattr(config, "latents_std", None)
        if sdxl and mean is not None and std is not None:
            mean, std = (
                torch.tensor(v).view(1, 4, 1, 1).to(z.device, z.dtype) for v in (mean, std)
            )
            z = z * std / config.scaling_factor + mean
        else:
            z = z / config.scaling_factor
        with torch.no_grad():
            image = vae.decode(z.to(get_module_execution_device(vae)), return_dict=False)[0]
    finally:
        if upcast:
            vae.to(dtype=original)
    if sdxl and pipe.watermark is not None:
        image = pipe.watermark.apply_watermark(image)
    return image, upcast or original == torch.float32


def _tiny(pipe: Any, latents: Any, tiny: Any) -> tuple[Any, np.ndarray | None]:
    """The tiny VAE's decode (a live frame), or None when it came out NaN or black."""
    from sdstudio.engine.diffusion.tiny_vae import tiny_decode

    image = tiny_decode(tiny, latents)
    images = pipe.image_processor.postprocess(image, output_type="np")
    if _problem(images):
        log.warning("The tiny VAE decoded %s: decoding with the full VAE", _problem(images))
        return image, None
    return image, images


def decode_latents(
    pipe: Any, latents: Any, *, on_retry: Callable[[str], None] | None = None, tiny: Any = None
) -> np.ndarray:
    """Float images in [0, 1], exactly as ``output_type="np"`` gives them, or GenerationError.

    A NaN or all-black decode by a half-precision VAE is decoded again in fp32; if it is still
    bad (NaN latents: the UNet itself overflowed) the run fails rather than paste it. ``tiny``
    (a live frame with a tiny VAE installed) decodes with it instead; a bad tiny decode falls
    back to the full VAE.
    """
    if tiny is not None:
        image, images = _tiny(pipe, latents, tiny)
        if images is not None:
            return _checked(pipe, image, images)
    image, was_fp32 = _decode(pipe, latents, full_precision=False)
    images = pipe.image_processor.postprocess(image, output_type="np")
    problem = _problem(images)
    if problem and not was_fp32:
        if on_retry is not None:
            on_retry(f"The image decoded {problem}: decoding again in full precision")
        image, _ = _decode(pipe, latents, full_precision=True)
        images = pipe.image_processor.postprocess(image, output_type="np")
        problem = _problem(images)
    if problem:
        import torch

        cause = (
            "the denoising itself overflowed (NaN latents): try another seed or "
            "SDSTUDIO_DTYPE=bfloat16 / float32"
            if not bool(torch.isfinite(latents).all())
            else "try another seed or prompt, or a model with a fixed VAE"
        )
        raise GenerationError(
            f"The model returned an empty image ({problem}), so nothing was pasted: {cause}."
        )
    return _checked(pipe, image, images)


def _checked(pipe: Any, image: Any, images: np.ndarray) -> np.ndarray:
    """``images`` unless the pipeline's safety checker flags them."""
    if getattr(pipe, "safety_checker", None) is not None:
        checker = pipe.safety_checker
        _, flagged = pipe.run_safety_checker(image, pipe._execution_device, checker.dtype)
        if flagged is not None and any(flagged):
            raise ImageFiltered(
                "Filtered: the safety checker flagged this image, so nothing was pasted. "
                "Change the prompt or the seed."
            )
    return images


def run_and_decode(
    pipe: Any,
    kwargs: dict[str, Any],
    plan: DevicePlan,
    *,
    on_retry: Callable[[str], None] | None = None,
    context: str = "",
    tiny: Any = None,
) -> np.ndarray:
    """``pipe(**kwargs, output_type="np").images`` with the out-of-memory ladder around the
    denoising and around the decode, and the NaN/black check and fp32 re-decode in between.

    Generators in ``kwargs`` are rewound before each try, so a retry gives the seed's image.
    """
    kwargs = {**kwargs, "output_type": "latent"}
    generators = kwargs.get("generator") or []
    generators = generators if isinstance(generators, list) else [generators]
    states = [g.get_state() for g in generators]

    def denoise() -> Any:
        for generator, state in zip(generators, states, strict=True):
            generator.set_state(state)
        return pipe(**kwargs).images

    latents = run_with_ladder(denoise, pipe, plan, on_retry=on_retry, context=context)
    try:
        return run_with_ladder(
            lambda: decode_latents(pipe, latents, on_retry=on_retry, tiny=tiny),
            pipe,
            applied_plan(pipe) or plan,
            on_retry=on_retry,
            context=context,
        )
    finally:
        if hasattr(pipe, "maybe_free_model_hooks"):
            pipe.maybe_free_model_hooks()  # model offload: send the VAE back to the CPU too
