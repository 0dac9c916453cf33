"""Where and how a pipeline runs, and what happens when it runs out of memory or decodes to NaN.

``plan_device`` picks device, precision, offload and VAE tiling from the hardware (free VRAM) and
the person's overrides; ``apply_plan`` puts a pipeline in that state; ``run_with_ladder`` runs a
pipeline call under the out-of-memory ladder (free memory, VAE tiling, model offload, sequential
offload, then a clear error). ``decoding.run_and_decode`` builds on it: latents, then a checked
decode, so a NaN or black image from a half-precision VAE is decoded again in fp32, never pasted.

Precision: CUDA runs fp16 by default, bf16 only on request. The checkpoints people use ship fp16
weights and every popular UI runs them in fp16, so fp16 gives the results people expect; bf16's
shorter mantissa shifts results, older GPUs (before Ampere) emulate it slowly, and the one common
fp16 failure (the SDXL VAE overflowing) is handled by the pipeline's ``force_upcast`` and by the
fp32 re-decode here. torch is imported inside functions.
"""

from __future__ import annotations

import gc
import logging
import os
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from sdstudio.core.errors import GenerationError, ModelError
from sdstudio.core.request import ModelFamily

log = logging.getLogger(__name__)
GB = 1024**3


@dataclass(frozen=True)
class _Needs:
    """Free VRAM (GiB) a family needs at its native size with fp16 weights (fp32: twice)."""

    full: float  # everything resident on the GPU
    offload: float  # model CPU offload: the UNet alone plus activations
    untiled_vae: float  # below this, decode in tiles


# SD1.5: weights ~2.1 GB (UNet 1.7, CLIP-L 0.25, VAE 0.16); a 512 px run peaks near 3 GB (SDPA).
# SDXL: weights ~6.9 GB (UNet 5.1, text encoders 1.6, VAE 0.16); a 1024 px run peaks near 8.5 GB,
# and its VAE decodes in fp32 (force_upcast), ~3 GB more at 1024 px unless tiled.
NEEDS = {
    ModelFamily.SD1: _Needs(full=3.5, offload=2.5, untiled_vae=5.0),
    ModelFamily.SDXL: _Needs(full=9.0, offload=6.5, untiled_vae=10.0),
}
ENV = {
    "device": "SDSTUDIO_DEVICE",
    "dtype": "SDSTUDIO_DTYPE",
    "offload": "SDSTUDIO_OFFLOAD",
    "vae_tiling": "SDSTUDIO_VAE_TILING",
}
_CHOICES = {
    "device": {"cuda": "cuda", "mps": "mps", "cpu": "cpu"},
    "dtype": {
        **dict.fromkeys(("float16", "fp16", "half"), "float16"),
        **dict.fromkeys(("bfloat16", "bf16"), "bfloat16"),
        **dict.fromkeys(("float32", "fp32", "float"), "float32"),
    },
    "offload": {"none": "none", "model": "model", "sequential": "sequential"},
    "vae_tiling": {
        **dict.fromkeys(("1", "true", "on", "yes"), True),
        **dict.fromkeys(("0", "false", "off", "no"), False),
    },
}
FAST_ENV = {
    "channels_last": "SDSTUDIO_CHANNELS_LAST",
    "fused_qkv": "SDSTUDIO_FUSED_QKV",
    "compile": "SDSTUDIO_COMPILE",
    "tiny_vae": "SDSTUDIO_TINY_VAE",
}
"""The fast path's switches (sdstudio.engine.diffusion.fastpath): on unless turned off."""
_WORDS = {"model": "model CPU offload", "sequential": "sequential CPU offload"}
CPU_WARNING = "No GPU found: generating on the CPU takes minutes per image"


@dataclass(frozen=True)
class FastOptions:
    """Which fast-path steps a person allows. They are wishes: channels_last, fused QKV and
    compile are applied on CUDA only; the tiny VAE is used wherever one is installed."""

    channels_last: bool = True
    fused_qkv: bool = True
    compile: bool = True
    tiny_vae: bool = True


def fast_options(
    settings: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
) -> FastOptions:
    """The fast-path switches from the settings (``on``/``off``/``auto``, or bools) and the
    ``SDSTUDIO_CHANNELS_LAST``/``FUSED_QKV``/``COMPILE``/``TINY_VAE`` variables (which win)."""
    environ = os.environ if environ is None else environ
    values: dict[str, bool] = {}
    for key, name in FAST_ENV.items():
        value, source = (settings or {}).get(key), f"the '{key}' setting"
        if environ.get(name, "").strip():
            value, source = environ[name], name
        if value is None or isinstance(value, bool):
            values[key] = True if value is None else value
            continue
        text = str(value).strip().lower()
        if text == "auto":
            text = "on"
        if text not in _CHOICES["vae_tiling"]:
            raise ModelError(f"{source} is '{value}', which is not valid: use on, off or auto.")
        values[key] = _CHOICES["vae_tiling"][text]
    return FastOptions(**values)


@dataclass(frozen=True)
class DevicePlan:
    device: str  # "cuda" | "mps" | "cpu"
    dtype: str  # "float16" | "bfloat16" | "float32"
    offload: str = "none"  # "none" | "model" | "sequential"
    vae_tiling: bool = False
    vae_slicing: bool = False  # splits a batch in the VAE; runs are batch 1, so it is cheap
    attention_slicing: bool = False
    label: str = ""  # the hardware, e.g. "CUDA NVIDIA GeForce RTX 3060 (11.6 of 12.0 GB free)"
    warning: str | None = None
    fast: FastOptions = FastOptions()

    @property
    def reason(self) -> str:
        """One line for the status bar and the log."""
        parts = [{"float16": "fp16", "bfloat16": "bf16", "float32": "fp32"}[self.dtype]]
        parts.append(_WORDS.get(self.offload, "no offload"))
        if self.vae_tiling:
            parts.append("VAE tiling")
        if self.attention_slicing:
            parts.append("attention slicing")
        return f"{self.label or self.device.upper()}: {', '.join(parts)}"

    @property
    def torch_dtype(self) -> Any:
        import torch

        return getattr(torch, self.dtype)


class TorchProbe:
    """The hardware as torch sees it (tests pass a fake with the same methods)."""

    def cuda_available(self) -> bool:
        import torch

        return torch.cuda.is_available()

    def mem_get_info(self) -> tuple[int, int]:
        import torch

        return torch.cuda.mem_get_info()

    def bf16_supported(self) -> bool:
        import torch

        return torch.cuda.is_bf16_supported()

    def device_name(self) -> str:
        import torch

        return torch.cuda.get_device_name()

    def mps_available(self) -> bool:
        import torch

        return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def _overrides(settings: Mapping[str, Any] | None, environ: Mapping[str, str]) -> dict:
    """Valid overrides as key -> (value, where it came from); the environment beats settings."""
    found: dict[str, tuple[Any, str]] = {}
    for key, value in (settings or {}).items():
        if key not in ENV:
            raise ModelError(f"Unknown device setting '{key}': use {', '.join(ENV)}.")
        found[key] = (value, f"the '{key}' setting")
    for key, name in ENV.items():
        if environ.get(name, "").strip():
            found[key] = (environ[name], name)
    wanted = {}
    for key, (value, source) in found.items():
        if value is None or (isinstance(value, str) and value.strip().lower() in ("", "auto")):
            continue
        if isinstance(value, bool) and key == "vae_tiling":
            wanted[key] = (value, source)
            continue
        text = str(value).strip().lower()
        if text not in _CHOICES[key]:
            raise ModelError(
                f"{source} is '{value}', which is not a valid {key}: use auto or one of "
                f"{'on, off' if key == 'vae_tiling' else ', '.join(sorted(set(_CHOICES[key].values())))}."
            )
        wanted[key] = (_CHOICES[key][text], source)
    return wanted


def plan_device(
    family: ModelFamily,
    *,
    override: Mapping[str, Any] | None = None,
    probe: Any = None,
    environ: Mapping[str, str] | None = None,
) -> DevicePlan:
    """The plan for ``family`` on this machine. ``override`` holds the settings' device, dtype,
    offload and vae_tiling ("auto" or missing: decide); the ``SDSTUDIO_*`` variables beat it."""
    environ = os.environ if environ is None else environ
    fast = fast_options(override, environ)
    device_only = {k: v for k, v in (override or {}).items() if k not in FAST_ENV}
    plan = _plan(family, _overrides(device_only, environ), probe)
    return replace(plan, fast=fast)


def _plan(family: ModelFamily, wanted: dict, probe: Any) -> DevicePlan:
    probe = probe or TorchProbe()
    device, source = wanted.get("device", (None, ""))
    if device is None:
        device = "cuda" if probe.cuda_available() else "mps" if probe.mps_available() else "cpu"
    elif not (device == "cpu" or getattr(probe, f"{device}_available")()):
        raise ModelError(
            f"{source} asks for {device}, but no {device.upper()} device is available here: "
            "use cpu, or leave it on auto."
        )

    def pick(key: str, default: Any, allowed: tuple = ()) -> Any:
        value, where = wanted.get(key, (default, ""))
        if allowed and value not in allowed:
            raise ModelError(
                f"{where} asks for {key} {value}, which {device} cannot use: "
                f"use {' or '.join(allowed)}."
            )
        return value

    if device == "cuda":
        dtype = pick("dtype", "float16")
        if dtype == "bfloat16" and not probe.bf16_supported():
            raise ModelError(
                f"{wanted['dtype'][1]} asks for bfloat16, which this GPU does not support (it "
                "needs an NVIDIA RTX 30xx / A100 or newer): use float16."
            )
        free, total = probe.mem_get_info()
        free_gb, scale, needs = free / GB, (2.0 if dtype == "float32" else 1.0), NEEDS[family]
        fits = "none" if free_gb >= needs.full * scale else "model"
        if free_gb < needs.offload * scale:
            fits = "sequential"
        tiling = pick("vae_tiling", free_gb < needs.untiled_vae * scale)
        label = f"CUDA {probe.device_name()} ({free_gb:.1f} of {total / GB:.1f} GB free)"
        return DevicePlan("cuda", dtype, pick("offload", fits), tiling, tiling, False, label)
    pick("offload", "none", ("none",))
    tiling = pick("vae_tiling", False)
    if device == "mps":
        dtype = pick("dtype", "float32", ("float32", "float16"))
        return DevicePlan("mps", dtype, "none", tiling, tiling, True, "Apple MPS")
    dtype = pick("dtype", "float32", ("float32", "bfloat16"))
    warning = (
        CPU_WARNING if not source else f"{source} asks for the CPU, which takes minutes per image"
    )
    return DevicePlan("cpu", dtype, "none", tiling, tiling, False, "CPU", warning)


_applied: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def applied_plan(pipe: Any) -> DevicePlan | None:
    """The plan ``apply_plan`` last put ``pipe`` in (after a ladder: the rung that worked)."""
    return _applied.get(pipe)


def apply_plan(pipe: Any, plan: DevicePlan) -> None:
    """Put ``pipe`` in ``plan``'s state, changing only what differs from the last plan applied.

    Sequential offload moves the weights to the meta device, so it cannot be undone here: reload
    the model to leave it. The dtype is the loader's (``from_pretrained(dtype=plan.torch_dtype)``).
    """
    before = _applied.get(pipe)
    if before == plan:
        return
    was = before or DevicePlan(plan.device, plan.dtype, offload="")
    if (was.offload, was.device) != (plan.offload, plan.device):
        if was.offload == "sequential":
            raise ModelError("Sequential CPU offload cannot be turned off: reload the model.")
        if plan.offload == "model":
            pipe.enable_model_cpu_offload(device=plan.device)
        elif plan.offload == "sequential":
            pipe.enable_sequential_cpu_offload(device=plan.device)
        else:
            if was.offload == "model":
                pipe.remove_all_hooks()
            pipe.to(plan.device)
    vae = pipe.vae
    for old, new, enable, disable in (
        (was.vae_tiling, plan.vae_tiling, vae.enable_tiling, vae.disable_tiling),
        (was.vae_slicing, plan.vae_slicing, vae.enable_slicing, vae.disable_slicing),
        (was.attention_slicing, plan.attention_slicing, pipe.enable_attention_slicing,
         pipe.disable_attention_slicing),
    ):  # fmt: skip
        if old != new:
            (enable if new else disable)()
    _applied[pipe] = plan


LADDER = (
    "after freeing memory",
    "with VAE tiling",
    "with model CPU offload (slower)",
    "with sequential CPU offload (much slower)",
)


def degrade(plan: DevicePlan, step: int) -> DevicePlan | None:
    """Rung ``step`` (1-4) of the out-of-memory ladder from ``plan``; None past the last.

    1: the same plan (after freeing memory), 2: + VAE tiling, 3: + model offload, 4: sequential
    offload. Offload rungs exist on CUDA only (on a Mac the memory is shared; on a CPU it is RAM).
    """
    tiled = replace(plan, vae_tiling=True, vae_slicing=True)
    if step in (1, 2):
        return plan if step == 1 else tiled
    if plan.device != "cuda" or step > 4:
        return None
    if step == 3 and plan.offload != "none":
        return tiled
    return replace(tiled, offload="model" if step == 3 else "sequential")


def is_out_of_memory(error: BaseException) -> bool:
    import torch

    if isinstance(error, getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)):
        return True
    text = str(error).lower() if isinstance(error, RuntimeError) else ""
    marks = ("out of memory", "can't allocate memory", "not enough memory", "alloc_failed")
    return any(mark in text for mark in marks)


def free_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    mps = getattr(torch, "mps", None)
    if (
        mps is not None
        and getattr(torch.backends, "mps", None)
        and torch.backends.mps.is_available()
    ):
        mps.empty_cache()


def run_with_ladder(
    call: Callable[[], Any],
    pipe: Any,
    plan: DevicePlan,
    *,
    on_retry: Callable[[str], None] | None = None,
    context: str = "",
) -> Any:
    """``call()`` with ``pipe`` in ``plan``; out of memory -> the next rung and again.

    Only out-of-memory errors are retried; anything else (``RunCancelled`` too) passes through.
    ``applied_plan(pipe)`` afterwards is the rung that worked. ``context`` (e.g. "at 768x768")
    goes into the final error.
    """
    apply_plan(pipe, plan)
    current, step = plan, 0
    memory = "GPU memory" if plan.device != "cpu" else "memory"
    while True:
        try:
            return call()
        except Exception as error:
            if not is_out_of_memory(error):
                raise
            log.warning("out of %s (%s)", memory, current.reason, exc_info=True)
        # Out of the except block: the traceback, and the tensors its frames hold, are released.
        free_memory()
        while True:
            step += 1
            rung = degrade(plan, step)
            if rung is None or step == 1 or rung != current:
                break
        if rung is None:
            raise GenerationError(_exhausted(current, memory, context))
        apply_plan(pipe, rung)
        current = rung
        if on_retry is not None:
            on_retry(f"Out of {memory}: retrying {LADDER[step - 1]}")


def _exhausted(plan: DevicePlan, memory: str, context: str) -> str:
    tried = " and ".join(
        ["VAE tiling"] + ([_WORDS[plan.offload]] if plan.offload in _WORDS else [])
    )
    advice = "lower the padding or the image size"
    if plan.device == "cpu":
        advice += ", or close other programs"
    else:
        advice += ", close other programs using the GPU, or run on the CPU (SDSTUDIO_DEVICE=cpu)"
    where = f" {context}" if context else ""
    return f"Out of {memory}{where} even with {tried}: {advice}."
