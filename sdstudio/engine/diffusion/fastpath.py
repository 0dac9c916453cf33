"""The fast path on CUDA: SDPA, channels_last, fused QKV and ``torch.compile`` per shape.

``FastPath.prepare`` runs before each pipeline call, after the LoRAs are switched:

- **fp16** comes from the device plan (``devices.plan_device``: fp16 on CUDA); nothing here.
- **SDPA**: diffusers' default processors (``AttnProcessor2_0``) already use it; a UNet or VAE
  left on the classic ``AttnProcessor`` is put back on it (unless attention slicing is on).
- **channels_last** for the UNet and the VAE (NHWC convolutions, faster on tensor cores).
- **Fused QKV** (``fuse_qkv_projections`` of the UNet and VAE modules, diffusers 0.42): the
  fused layer is a copy of the base weights, and PEFT's LoRA layers wrap ``to_q/k/v``, which the
  fused processor bypasses. So the UNet is fused only while no LoRA is switched on; a run with
  LoRAs unfuses first (the original processors return; the base weights were never changed),
  and a later run without LoRAs fuses again. The VAE carries no LoRAs and stays fused.
- **compile**: the UNet's and the VAE decoder's ``forward`` go through ``ShapeCompiled``. Each
  call's shape (tensor shapes, dtypes, flags, and the LoRA/fusion state) is a key. The first
  call of a key runs eager and keeps its inputs; after the run (``compile_pending``, on the
  engine's generation thread, which CUDA graphs need: their state is per thread) the compiled
  function is run once on them, which compiles and records the CUDA graph for that key, and
  later calls of that key use it. ``dynamic=False``: CUDA graphs need fixed shapes anyway (live
  frames keep one), so each key is its own graph; at most ``max_shapes`` keys compile (each
  holds a graph's memory, and dynamo stops recompiling past its own limit of 8), the rest stay
  eager. A failure, when compiling or at any compiled call, falls back to the eager module for
  good (no retry until the model is reloaded) and leaves a note for the run's result.

On the CPU and Apple GPUs the CUDA-only steps are skipped with a reason (``skipped``);
``allow_cpu`` forces them (tests, ``bench_gpu --tiny``). torch is imported inside functions.
"""

from __future__ import annotations

import functools
import logging
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sdstudio.engine.diffusion.devices import DevicePlan, is_out_of_memory

log = logging.getLogger(__name__)

MAX_SHAPES = 4
PREPARING = (
    "Preparing the fast path for this size (once per size): the next run starts when it is ready."
)
"""The note a result carries when its shape compiles after it (the next run waits for that)."""
STEPS = ("channels_last", "fused_qkv", "compile")


def default_compiler(fn: Callable) -> Callable:
    import torch

    return torch.compile(fn, mode="reduce-overhead", dynamic=False, fullgraph=False)


@dataclass
class _Modules:
    """What has been done to one UNet (shared by every pipeline made with ``from_pipe``)."""

    channels_last: bool = False
    vae_fused: bool = False
    unet_fused: bool = False
    compiled: list = field(default_factory=list)  # ShapeCompiled wrappers


class FastPath:
    """One per engine: applies the fast path to the loaded pipelines and compiles their shapes."""

    def __init__(
        self,
        compiler: Callable[[Callable], Callable] | None = None,
        *,
        allow_cpu: bool = False,
        max_shapes: int = MAX_SHAPES,
    ) -> None:
        self.compiler = compiler or default_compiler
        self.allow_cpu = allow_cpu
        self.max_shapes = max_shapes
        self.skipped: dict[str, str] = {}
        """Step -> why it was not applied at the last ``prepare``."""
        self._done: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # UNet -> _Modules
        self._notes: list[str] = []

    def prepare(
        self, pipe: Any, plan: DevicePlan, *, loras: tuple = (), attention_slicing: bool = False
    ) -> tuple[str, ...]:
        """Put ``pipe``'s modules on the fast path ``plan`` allows; the steps in effect."""
        unet, vae = pipe.unet, pipe.vae
        done = self._done.setdefault(unet, _Modules())
        self.skipped = {}
        if not attention_slicing:
            _use_sdpa(unet)
            _use_sdpa(vae)
        cuda = plan.device == "cuda" or self.allow_cpu
        wanted = {step: getattr(plan.fast, step) for step in STEPS}
        for step, on in wanted.items():
            if not on:
                self.skipped[step] = "switched off"
            elif not cuda:
                self.skipped[step] = f"CUDA only (running on {plan.device})"
            elif plan.offload == "sequential" or (step == "compile" and plan.offload != "none"):
                self.skipped[step] = f"not with {plan.offload} CPU offload"
        if "channels_last" not in self.skipped and not done.channels_last:
            import torch

            unet.to(memory_format=torch.channels_last)
            vae.to(memory_format=torch.channels_last)
            done.channels_last = True
        if "fused_qkv" not in self.skipped:
            if not done.vae_fused and hasattr(vae, "fuse_qkv_projections"):
                vae.fuse_qkv_projections()
                done.vae_fused = True
            if loras:
                self.skipped["fused_qkv"] = "UNet unfused while LoRAs are on"
                if done.unet_fused:
                    unet.unfuse_qkv_projections()
                    done.unet_fused = False
            elif not done.unet_fused:
                unet.fuse_qkv_projections()
                done.unet_fused = True
        if "compile" not in self.skipped and not done.compiled:
            done.compiled = [
                ShapeCompiled(module, name, self.compiler, self.max_shapes, self._notes.append)
                for module, name in ((unet, "UNet"), (vae.decoder, "VAE decoder"))
            ]
        variant = (done.unet_fused, tuple(loras))
        for wrapper in done.compiled:
            wrapper.enabled = "compile" not in self.skipped
            wrapper.variant = variant
        return tuple(step for step in STEPS if step not in self.skipped)

    def compiles(self, pipe: Any) -> bool:
        """Whether ``pipe``'s UNet may run compiled (then per-block cancel hooks stay off it:
        compiled code cannot check a flag mid-graph; cancel still acts between steps)."""
        done = self._done.get(pipe.unet)
        return bool(done and any(w.enabled and not w.failed for w in done.compiled))

    def has_pending(self) -> bool:
        """Whether the last run saw a shape that ``compile_pending`` will compile."""
        return any(w.pending for done in self._done.values() for w in done.compiled)

    def compile_pending(self) -> dict[str, float]:
        """Compile the shapes first seen in the last run (call it after the run's result is
        out, on the thread that runs the pipelines); seconds per compiled module."""
        times: dict[str, float] = {}
        for done in list(self._done.values()):
            for wrapper in done.compiled:
                seconds = wrapper.compile_pending()
                if seconds:
                    times[wrapper.name] = times.get(wrapper.name, 0.0) + seconds
        return times

    def take_notes(self) -> tuple[str, ...]:
        """Notes for the status (a compile that failed), each given once."""
        notes, self._notes[:] = tuple(self._notes), []
        return notes


def _use_sdpa(model: Any) -> None:
    """Put ``model`` back on SDPA where a classic ``AttnProcessor`` is set."""
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    processors = getattr(model, "attn_processors", None)
    if not processors or not any(type(p) is AttnProcessor for p in processors.values()):
        return
    model.set_attn_processor(
        {
            name: AttnProcessor2_0() if type(p) is AttnProcessor else p
            for name, p in processors.items()
        }
    )


def shape_key(value: Any) -> Any:
    """What a compiled graph depends on in a call's arguments: tensor shapes/dtypes/devices,
    flags and strings; numbers by type only (a timestep's value changes every step)."""
    import torch

    if isinstance(value, torch.Tensor):
        return ("T", tuple(value.shape), str(value.dtype), str(value.device))
    if isinstance(value, dict):
        return tuple((k, shape_key(v)) for k, v in sorted(value.items()))
    if isinstance(value, list | tuple):
        return (type(value).__name__, tuple(shape_key(v) for v in value))
    if value is None or isinstance(value, bool | str):
        return value
    return type(value).__name__


def _clone(value: Any) -> Any:
    import torch
    from torch.utils import _pytree

    return _pytree.tree_map(
        lambda v: v.detach().clone() if isinstance(v, torch.Tensor) else v, value
    )


class ShapeCompiled:
    """A module's ``forward`` replaced by a dispatcher: compiled for the keys that are ready,
    eager for the others (see the module docstring). ``enabled`` False: always eager."""

    def __init__(
        self,
        module: Any,
        name: str,
        compiler: Callable[[Callable], Callable],
        max_shapes: int,
        note: Callable[[str], None],
    ) -> None:
        self.name, self.compiler, self.max_shapes, self._note = name, compiler, max_shapes, note
        self.eager = module.forward
        self.compiled: Callable | None = None
        self.enabled = True
        self.failed = False
        self.variant: Any = ()
        self.ready: set = set()
        self.pending: dict[Any, tuple] = {}
        self.seconds: dict[Any, float] = {}
        self.compiled_calls = 0

        def dispatch(*args: Any, **kwargs: Any) -> Any:
            return self(*args, **kwargs)

        module.forward = functools.update_wrapper(dispatch, self.eager)

    def key(self, args: tuple, kwargs: dict) -> Any:
        return (shape_key(args), shape_key(kwargs), self.variant)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not self.enabled or self.failed:
            return self.eager(*args, **kwargs)
        key = self.key(args, kwargs)
        if key in self.ready:
            try:
                return self._run_compiled(args, kwargs)
            except Exception as error:
                if is_out_of_memory(error):
                    raise  # the out-of-memory ladder's, not a compile failure
                self._fail(error)
        elif key not in self.pending and len(self.ready) + len(self.pending) < self.max_shapes:
            self.pending[key] = (_clone(args), _clone(kwargs))
        return self.eager(*args, **kwargs)

    def _run_compiled(self, args: tuple, kwargs: dict) -> Any:
        import torch

        if self.compiled is None:
            self.compiled = self.compiler(self.eager)
        if any(v.is_cuda for v in _tensors((args, kwargs))):
            torch.compiler.cudagraph_mark_step_begin()
        out = self.compiled(*args, **kwargs)
        self.compiled_calls += 1
        return _clone(out)  # CUDA graphs reuse their output memory at the next replay

    def compile_pending(self) -> float:
        """Compile (run once, compiled) each pending key; the seconds it took, 0 if none."""
        import torch

        total = 0.0
        while self.pending and not self.failed and self.enabled:
            key, (args, kwargs) = self.pending.popitem()
            start = time.perf_counter()
            try:
                with torch.no_grad():
                    self._run_compiled(args, kwargs)
            except Exception as error:  # noqa: BLE001 - any failure: eager from now on
                self._fail(error)
                break
            seconds = time.perf_counter() - start
            self.ready.add(key)
            self.seconds[key] = seconds
            total += seconds
            log.info("Compiled the %s for a new shape in %.1f s", self.name, seconds)
        self.pending.clear()
        return total

    def _fail(self, error: BaseException) -> None:
        self.failed = True
        self.pending.clear()
        log.warning("Compiling the %s failed: running it uncompiled", self.name, exc_info=error)
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:160]
        self._note(
            f"Compiling the {self.name} failed ({type(error).__name__}: {first}): it runs "
            "uncompiled (slower). Turn compile off in Models > Device and memory > Fast path."
        )


def _tensors(value: Any) -> list:
    import torch
    from torch.utils import _pytree

    return [v for v in _pytree.tree_leaves(value) if isinstance(v, torch.Tensor)]
