"""The local Stable Diffusion engine: requests in, events out, diffusers pipelines underneath.

It wraps the pipelines rather than forking them: everything it adds (crop and paste-back,
previews, cancel, checks of the output) sits around one ordinary pipeline call.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from sdstudio.core.errors import GenerationError, RequestError
from sdstudio.core.metadata import format_parameters
from sdstudio.core.paths import embeddings_dir, loras_dir, models_dir
from sdstudio.core.pixels import to_rgb8
from sdstudio.core.region import Box, generation_size
from sdstudio.core.request import ControlKind, GenerationRequest, Mode
from sdstudio.engine import inpaint
from sdstudio.engine.classical import fill_crop
from sdstudio.engine.compositing import blend_patch, resize_rgb
from sdstudio.engine.diffusion.adapters import (
    AdapterState,
    find_embeddings,
    find_lora,
    load_embedding,
)
from sdstudio.engine.diffusion.controlnet import (
    ControlNetInfo,
    check_family,
    check_union,
    control_image,
    inpaint_condition,
    resolve_controlnet,
    union_mode,
)
from sdstudio.engine.diffusion.decoding import run_and_decode
from sdstudio.engine.diffusion.devices import applied_plan
from sdstudio.engine.diffusion.fastpath import PREPARING, FastPath
from sdstudio.engine.diffusion.pipelines import PipelineCache, Task
from sdstudio.engine.diffusion.prompts import encode_prompt, parse_prompt
from sdstudio.engine.diffusion.tiny_vae import TinyPreviewer, TinyVaes
from sdstudio.engine.events import Event, Finished, Preview, Started, Step
from sdstudio.engine.specialists.lama import find_lama
from sdstudio.engine.streaming import Emit, GenerationThread, check_cancel

log = logging.getLogger(__name__)

NEUTRAL_PROMPT = "empty background, seamless, natural continuation of the surroundings"
NEUTRAL_NEGATIVE = "person, object, text, watermark, frame, border"

TASKS = {
    Mode.TXT2IMG: Task.TXT2IMG,
    Mode.IMG2IMG: Task.IMG2IMG,
    Mode.INPAINT: Task.INPAINT,
    Mode.OUTPAINT: Task.INPAINT,
    Mode.REMOVE: Task.INPAINT,
}


def steps_run(steps: int, strength: float, mode: Mode) -> int:
    """How many denoising steps diffusers runs for ``steps`` at ``strength``."""
    if mode is Mode.TXT2IMG:
        return steps
    return min(int(steps * strength), steps)


def _cancel_hooks(pipe: Any, cancel: threading.Event) -> list[Any]:
    """Check the cancel flag before each UNet and VAE-decoder block, not only between steps."""

    def hook(_module: Any, _args: Any) -> None:
        check_cancel(cancel)

    unet, decoder = pipe.unet, pipe.vae.decoder
    blocks = [*unet.down_blocks, unet.mid_block, *unet.up_blocks, *decoder.up_blocks]
    return [block.register_forward_pre_hook(hook) for block in blocks if block is not None]


def _to_rgb8(images: np.ndarray) -> np.ndarray:
    image = images[0]
    if not np.isfinite(image).all() or float(image.max()) < 1.0 / 255.0:
        raise GenerationError(
            "The model returned an empty image (black or NaN), so nothing was pasted. This is "
            "often a half-precision VAE overflow: try another seed, or run in full precision "
            "(SDSTUDIO_DEVICE=cpu), or use a model with a fixed VAE."
        )
    return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)


class DiffusersEngine:
    """txt2img, img2img and inpaint with Stable Diffusion 1.x / SDXL models through diffusers."""

    def __init__(
        self,
        cache: PipelineCache | None = None,
        models_folder: Callable[[], Path] | None = None,
    ) -> None:
        """``models_folder`` is asked at each run (the user may change it): LoRAs come from its
        ``loras`` folder and textual-inversion embeddings from its ``embeddings`` folder."""
        self.cache = cache or PipelineCache()
        self.models_folder = models_folder or models_dir
        self.adapters = AdapterState()
        self.fast = FastPath()
        self.tiny_vaes = TinyVaes()
        self._thread = GenerationThread()

    def load(self, reference: str) -> None:
        """Load a model ahead of a run (runs load it themselves when needed)."""
        self.cache.load(reference)

    def check_controls(self, request: GenerationRequest) -> tuple[ControlNetInfo, ...]:
        """The request's ControlNets, resolved (downloaded if needed) and checked against the
        model's family, without loading the model or any ControlNet."""
        controls = tuple(resolve_controlnet(control.model) for control in request.controls)
        check_union(controls, tuple(control.kind for control in request.controls))
        if controls:
            info = self.cache.model_info(request.model)
            for control in controls:
                check_family(control, info.family, info.name)
        return controls

    def run(self, request: GenerationRequest, cancel: threading.Event) -> Iterator[Event]:
        return self._thread.stream(lambda emit: self._generate(request, cancel, emit), cancel)

    def close(self) -> None:
        """Stop the generation thread and free the model (after any run has ended)."""
        self._thread.shutdown()
        self.cache.unload()

    def _conditioning(self, request: GenerationRequest, pipe: Any) -> dict[str, Any]:
        """Prompt embeddings: LoRAs from ``<lora:name:w>`` tags and ``request.loras`` applied
        (others switched off), embeddings named in the prompt loaded, long prompts encoded in
        75-token chunks."""
        parsed = parse_prompt(request.prompt)
        prompt, negative = parsed.text, parse_prompt(request.negative_prompt).text
        if request.mode is Mode.REMOVE:
            prompt, negative = prompt or NEUTRAL_PROMPT, negative or NEUTRAL_NEGATIVE
        models = self.models_folder()
        wanted = [(ref.name, ref.weight) for ref in parsed.loras] + list(request.loras)
        loras = [(find_lora(name, [loras_dir(models)]), weight) for name, weight in wanted]
        self.adapters.apply(pipe, loras)
        for path in find_embeddings(f"{prompt} {negative}", [embeddings_dir(models)]):
            load_embedding(pipe, path)
        return encode_prompt(pipe, prompt, negative or None, device=self.cache.device)

    def _generate(self, request: GenerationRequest, cancel: threading.Event, emit: Emit) -> None:
        import torch

        from sdstudio.engine.diffusion.preview import DenoisedCapture, LatentPreviewer
        from sdstudio.engine.diffusion.schedulers import make_scheduler

        total = steps_run(request.steps, request.strength, request.mode)
        if total < 1:
            raise RequestError(
                f"Strength {request.strength} with {request.steps} steps runs no denoising step: "
                "raise the strength or the number of steps."
            )
        controls = self.check_controls(request)
        if request.mode is Mode.IMG2IMG and self.cache.load(request.model).inpainting_unet:
            request = as_whole_inpaint(request)  # an inpainting model redraws by inpainting
        loaded, pipe = self.cache.pipeline(request.model, TASKS[request.mode], controls)
        check_cancel(cancel)
        pipe.scheduler = make_scheduler(request.scheduler, loaded.scheduler_config)
        lama = find_lama(self.models_folder()) if request.mode is Mode.REMOVE else None
        box, crop, kwargs = _pipeline_inputs(request, loaded.native_size, lama)
        kwargs.update(_control_inputs(request, box, kwargs, controls))

        conditioning = self._conditioning(request, pipe)
        plan = self.cache.plan
        self.fast.prepare(
            pipe, plan, loras=self.adapters.active, attention_slicing=plan.attention_slicing
        )
        tiny = None
        if plan.fast.tiny_vae:
            tiny = self.tiny_vaes.get(loaded.family, self.models_folder(), pipe)
        check_cancel(cancel)
        emit(Started(request.mode, total, box))
        previewer = TinyPreviewer(tiny) if tiny is not None else LatentPreviewer(loaded.family)
        denoised = DenoisedCapture(pipe.scheduler)

        def on_step_end(pipeline: Any, index: int, _timestep: Any, tensors: dict) -> dict:
            check_cancel(cancel)
            n = pipeline.num_timesteps
            emit(Step(index + 1, n))
            rgb = previewer(denoised.latents_for_preview(tensors["latents"]))
            if rgb is not None:  # None: the tiny VAE's preview skipped this step (throttled)
                emit(Preview(index + 1, n, rgb, box))
            return tensors

        hooks = [] if self.fast.compiles(pipe) else _cancel_hooks(pipe, cancel)
        try:
            images = run_and_decode(
                pipe,
                {
                    **conditioning,
                    "num_inference_steps": request.steps,
                    "guidance_scale": request.guidance,
                    "generator": torch.Generator("cpu").manual_seed(request.seed),
                    "callback_on_step_end": on_step_end,
                    "callback_on_step_end_tensor_inputs": ["latents"],
                    **kwargs,
                },
                self.cache.plan,
                on_retry=lambda message: log.warning("%s", message),
                context=f"at {box.width}x{box.height}",
                tiny=tiny if request.live else None,
            )
        finally:
            for handle in hooks:
                handle.remove()
            self.cache.plan = applied_plan(pipe) or self.cache.plan  # a rung that worked sticks
        generated = _to_rgb8(images)
        check_cancel(cancel)

        patch = _result_patch(request, crop, box, generated)
        if request.image is None:
            width, height = request.width, request.height
        else:
            height, width = request.image.shape[:2]
        parameters = format_parameters(
            request, width=width, height=height, model_name=loaded.info.name
        )
        check_cancel(cancel)
        notes = self.fast.take_notes() + ((PREPARING,) if self.fast.has_pending() else ())
        emit(Finished(patch, box, parameters, request, notes))
        self.fast.compile_pending()  # shapes first seen in this run, after its result is out


def as_whole_inpaint(request: GenerationRequest) -> GenerationRequest:
    """An img2img request as an inpaint of its whole area (the region, else the picture), for
    an inpainting model, which cannot run img2img: the area is masked, its noised pixels still
    start the denoising at the request's strength, and nothing outside it changes."""
    assert request.image is not None
    height, width = request.image.shape[:2]
    area = request.region or Box(0, 0, width, height)
    mask = np.zeros((height, width), np.uint8)
    mask[area.slices] = 255
    return request.with_(mode=Mode.INPAINT, mask=mask, region=None, mask_blur=0)


def _pipeline_inputs(
    request: GenerationRequest, native: int, lama: Path | None = None
) -> tuple[Box, inpaint.InpaintCrop | None, dict[str, Any]]:
    """Where the result goes, the inpaint crop (if any), and the pipeline's image arguments.
    ``lama``: an installed LaMa, which pre-fills a removal's object-sized holes ("auto")."""
    if request.mode is Mode.TXT2IMG:
        return (
            Box(0, 0, request.width, request.height),
            None,
            {
                "width": request.width,
                "height": request.height,
            },
        )
    assert request.image is not None
    if request.mode is Mode.IMG2IMG:
        h, w = request.image.shape[:2]
        box = request.region or Box(0, 0, w, h)
        gen_w, gen_h = generation_size(box.width, box.height, native)
        source = resize_rgb(to_rgb8(request.image[box.slices]), gen_w, gen_h)
        return box, None, {"image": _pil(source), "strength": request.strength}
    crop = inpaint.prepare(request, native)
    source = crop.rgb
    if request.mode in (Mode.REMOVE, Mode.OUTPAINT):
        # pre-fill (no ghost of the object), reading the picture around the crop as far as a
        # large hole needs: the crop alone leaves it too little to copy texture from
        source = fill_crop(request, crop, lama=lama)[0]
    image, mask = crop.at_model_size(source)
    return (
        crop.box,
        crop,
        {
            "image": _pil(image),
            "mask_image": _pil(mask),
            "width": crop.region.gen_width,
            "height": crop.region.gen_height,
            "strength": request.strength,
        },
    )


def _control_inputs(
    request: GenerationRequest,
    box: Box,
    kwargs: dict[str, Any],
    infos: tuple[ControlNetInfo, ...] = (),
) -> dict:
    """The control images (cropped and resized like the picture) and their settings."""
    if not request.controls:
        return {}
    # img2img has no width and height: the picture's region at the generation size is the size
    size = (kwargs["width"], kwargs["height"]) if "width" in kwargs else kwargs["image"].size
    picture = None if request.image is None else request.image.shape[1::-1]
    images = []
    for control in request.controls:
        image = control_image(control, size, picture, box)
        if control.kind is ControlKind.INPAINT:  # the request checked it is an inpaint
            images.append(inpaint_condition(image, np.asarray(kwargs["mask_image"])))
        else:
            images.append(_pil(image))
    values = {
        "controlnet_conditioning_scale": [float(c.strength) for c in request.controls],
        "control_guidance_start": [float(c.start) for c in request.controls],
        "control_guidance_end": [float(c.end) for c in request.controls],
    }
    if len(request.controls) == 1:  # one ControlNet takes single values
        values = {key: value[0] for key, value in values.items()}
    if infos and infos[0].union:  # a union model (alone): a list of images and their modes
        values["control_image"] = images
        values["control_mode"] = [union_mode(infos[0], c.kind) for c in request.controls]
    else:
        key = "image" if request.mode is Mode.TXT2IMG else "control_image"
        values[key] = images[0] if len(images) == 1 else images
    return values


def _result_patch(
    request: GenerationRequest, crop: inpaint.InpaintCrop | None, box: Box, generated: np.ndarray
) -> np.ndarray:
    """The generated pixels as a patch of ``box`` in the picture's own layout."""
    if request.keep_tone and request.image is not None:
        from sdstudio.core.adjust import on_tone_curve, tone_table

        table = tone_table(request.image)
        if table is not None:
            generated = on_tone_curve(generated, table)
    if crop is not None:
        return inpaint.finish(request, crop, generated)
    if request.image is None:
        return generated
    generated = resize_rgb(generated, box.width, box.height)
    full = np.ones(generated.shape[:2], np.float32)
    return blend_patch(request.image[box.slices], generated, full)


def _pil(array: np.ndarray):
    from PIL import Image

    return Image.fromarray(array)
