"""Device plans, the out-of-memory ladder and the checked decode (offline, CPU).

GPUs and Macs are simulated with a fake probe; offload (which needs CUDA) with a pipe that records
its calls; the decode is compared with the pipelines' own ``output_type="np"`` on tiny models.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from sdstudio.core.errors import GenerationError, ModelError
from sdstudio.core.request import ModelFamily
from sdstudio.engine.diffusion import devices
from sdstudio.engine.diffusion.devices import (
    CPU_WARNING,
    DevicePlan,
    applied_plan,
    apply_plan,
    degrade,
    is_out_of_memory,
    plan_device,
    run_with_ladder,
)
from sdstudio.engine.streaming import RunCancelled

SD1, SDXL = ModelFamily.SD1, ModelFamily.SDXL


@dataclass
class FakeProbe:
    free_gb: float = 0.0
    total_gb: float = 0.0
    cuda: bool = True
    mps: bool = False
    bf16: bool = True

    def cuda_available(self) -> bool:
        return self.cuda

    def mem_get_info(self) -> tuple[int, int]:
        return int(self.free_gb * devices.GB), int(self.total_gb * devices.GB)

    def bf16_supported(self) -> bool:
        return self.bf16

    def device_name(self) -> str:
        return "Fake RTX"

    def mps_available(self) -> bool:
        return self.mps


def gpu(free_gb: float, total_gb: float = 0.0, **kw) -> FakeProbe:
    return FakeProbe(free_gb, total_gb or free_gb + 0.5, **kw)


MAC, NO_GPU = FakeProbe(cuda=False, mps=True), FakeProbe(cuda=False)


def plan(family=SD1, probe=None, environ=None, **override) -> DevicePlan:
    return plan_device(family, override=override, probe=probe, environ=environ or {})


# -- plan_device ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("family", "free", "offload", "tiling"),
    [
        (SD1, 23.0, "none", False),  # 24 GB card
        (SD1, 7.5, "none", False),  # 8 GB card
        (SD1, 3.6, "none", True),  # 4 GB card
        (SD1, 3.0, "model", True),
        (SD1, 1.8, "sequential", True),  # 2 GB card
        (SDXL, 23.0, "none", False),
        (SDXL, 11.5, "none", False),  # 12 GB card
        (SDXL, 9.5, "none", True),  # 10 GB card
        (SDXL, 7.5, "model", True),
        (SDXL, 3.6, "sequential", True),
        (SDXL, 1.8, "sequential", True),
    ],
)
def test_cuda_plan_follows_free_memory(family, free, offload, tiling):
    chosen = plan(family, gpu(free))
    assert (chosen.device, chosen.dtype, chosen.offload) == ("cuda", "float16", offload)
    assert (chosen.vae_tiling, chosen.vae_slicing, chosen.attention_slicing) == (
        tiling,
        tiling,
        False,
    )
    assert chosen.warning is None
    assert chosen.reason.startswith(f"CUDA Fake RTX ({free:.1f} of {free + 0.5:.1f} GB free): fp16")


def test_reason_lines():
    assert (
        plan(SD1, gpu(23.0, 24.0)).reason
        == "CUDA Fake RTX (23.0 of 24.0 GB free): fp16, no offload"
    )
    assert plan(SDXL, gpu(7.5, 8.0)).reason == (
        "CUDA Fake RTX (7.5 of 8.0 GB free): fp16, model CPU offload, VAE tiling"
    )


def test_mac_and_cpu():
    mac = plan(SDXL, MAC)
    assert (mac.device, mac.dtype, mac.offload, mac.attention_slicing) == (
        "mps",
        "float32",
        "none",
        True,
    )
    assert mac.warning is None and mac.reason == "Apple MPS: fp32, no offload, attention slicing"
    cpu = plan(SD1, NO_GPU)
    assert (cpu.device, cpu.dtype, cpu.offload, cpu.vae_tiling) == ("cpu", "float32", "none", False)
    assert (
        cpu.warning == CPU_WARNING == "No GPU found: generating on the CPU takes minutes per image"
    )
    assert cpu.torch_dtype.__repr__() == "torch.float32"


def test_the_real_probe_finds_no_gpu_here():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert plan_device(SD1, environ={}).device in ("cpu", "mps")


def test_overrides_from_settings():
    chosen = plan(SDXL, gpu(7.5), offload="none", vae_tiling=False)
    assert (chosen.offload, chosen.vae_tiling) == ("none", False)
    chosen = plan(SD1, gpu(23.0), offload="sequential", vae_tiling="on", dtype="auto", device="")
    assert (chosen.offload, chosen.vae_tiling, chosen.dtype) == ("sequential", True, "float16")
    assert plan(SD1, gpu(23.0), dtype="bf16").dtype == "bfloat16"
    forced = plan(SD1, gpu(23.0), device="cpu")  # a GPU machine run on the CPU
    assert forced.device == "cpu"
    assert forced.warning == "the 'device' setting asks for the CPU, which takes minutes per image"
    assert plan(SD1, MAC, dtype="fp16").dtype == "float16"
    assert plan(SD1, NO_GPU, dtype="bfloat16", vae_tiling=True).vae_tiling is True


def test_fp32_on_cuda_needs_twice_the_memory():
    assert plan(SD1, gpu(5.0)).offload == "none"
    assert plan(SD1, gpu(5.0), dtype="float32").offload == "model"


def test_environment_beats_settings():
    environ = {
        "SDSTUDIO_OFFLOAD": "Sequential",
        "SDSTUDIO_DTYPE": "fp32",
        "SDSTUDIO_VAE_TILING": "0",
    }
    chosen = plan(SDXL, gpu(23.0), environ, offload="model", dtype="float16", vae_tiling=True)
    assert (chosen.offload, chosen.dtype, chosen.vae_tiling) == ("sequential", "float32", False)
    assert plan(SD1, gpu(23.0), {"SDSTUDIO_DEVICE": "cpu"}).device == "cpu"


@pytest.mark.parametrize(
    ("probe", "override", "environ", "words"),
    [
        (gpu(8), {"device": "tpu"}, {}, ["'device' setting is 'tpu'", "cpu, cuda, mps"]),
        (gpu(8), {"offload": "maybe"}, {}, ["not a valid offload", "model, none, sequential"]),
        (gpu(8), {"vae_tiling": "sometimes"}, {}, ["not a valid vae_tiling"]),
        (gpu(8), {"colour": "red"}, {}, ["Unknown device setting 'colour'"]),
        (gpu(8), {}, {"SDSTUDIO_DTYPE": "float8"}, ["SDSTUDIO_DTYPE is 'float8'", "bfloat16"]),
        (NO_GPU, {}, {"SDSTUDIO_DEVICE": "cuda"}, ["SDSTUDIO_DEVICE asks for cuda", "use cpu"]),
        (gpu(8), {"device": "mps"}, {}, ["asks for mps", "no MPS device"]),
        (gpu(8, bf16=False), {"dtype": "bfloat16"}, {}, ["does not support", "float16"]),
        (NO_GPU, {"offload": "model"}, {}, ["offload model, which cpu cannot use: use none"]),
        (MAC, {"offload": "sequential"}, {}, ["which mps cannot use"]),
        (NO_GPU, {"dtype": "float16"}, {}, ["dtype float16, which cpu cannot use"]),
        (MAC, {"dtype": "bfloat16"}, {}, ["float32 or float16"]),
    ],
)
def test_invalid_overrides_are_clear_model_errors(probe, override, environ, words):
    with pytest.raises(ModelError) as caught:
        plan_device(SD1, override=override, probe=probe, environ=environ)
    for word in words:
        assert word in str(caught.value)


# -- apply_plan -----------------------------------------------------------------------------------


class Recorder:
    """A pipe (or VAE) that records the calls made on it, as ``name`` or ``name:argument``."""

    def __init__(self, calls: list[str], prefix: str = "") -> None:
        self.calls, self.prefix = calls, prefix
        if not prefix:
            self.vae = Recorder(calls, "vae.")

    def __getattr__(self, name: str):
        def record(*args, **kwargs):
            values = [*map(str, args), *map(str, kwargs.values())]
            self.calls.append(self.prefix + name + "".join(f":{v}" for v in values))
            return self

        return record


def cuda_plan(**changes) -> DevicePlan:
    return DevicePlan("cuda", "float16", label="CUDA Fake RTX", **changes)


def test_apply_plan_changes_only_what_differs():
    calls: list[str] = []
    pipe = Recorder(calls)
    apply_plan(pipe, cuda_plan(vae_tiling=True, vae_slicing=True))
    assert calls == ["to:cuda", "vae.enable_tiling", "vae.enable_slicing"]
    apply_plan(pipe, cuda_plan(vae_tiling=True, vae_slicing=True))
    assert len(calls) == 3  # idempotent
    apply_plan(pipe, cuda_plan(offload="model", vae_tiling=True, vae_slicing=True))
    apply_plan(pipe, cuda_plan(offload="none", attention_slicing=True))
    assert calls[3:] == [
        "enable_model_cpu_offload:cuda",
        "remove_all_hooks",
        "to:cuda",
        "vae.disable_tiling",
        "vae.disable_slicing",
        "enable_attention_slicing",
    ]
    assert applied_plan(pipe) == cuda_plan(offload="none", attention_slicing=True)


def test_sequential_offload_cannot_be_undone():
    calls: list[str] = []
    pipe = Recorder(calls)
    apply_plan(pipe, cuda_plan(offload="sequential"))
    assert calls == ["enable_sequential_cpu_offload:cuda"]
    with pytest.raises(ModelError, match="reload the model"):
        apply_plan(pipe, cuda_plan(offload="model"))


def test_apply_plan_on_a_real_pipeline(sd1_pipe):
    cpu = DevicePlan("cpu", "float32", label="CPU")
    apply_plan(sd1_pipe, DevicePlan("cpu", "float32", "none", True, True, True, "CPU"))
    assert sd1_pipe.vae.use_tiling and sd1_pipe.vae.use_slicing
    apply_plan(sd1_pipe, cpu)
    assert not sd1_pipe.vae.use_tiling and not sd1_pipe.vae.use_slicing
    assert applied_plan(sd1_pipe) == cpu


# -- the out-of-memory ladder ---------------------------------------------------------------------


def test_degrade_rungs():
    base = cuda_plan()
    tiled = cuda_plan(vae_tiling=True, vae_slicing=True)
    assert [degrade(base, step) for step in range(1, 6)] == [
        base,
        tiled,
        cuda_plan(offload="model", vae_tiling=True, vae_slicing=True),
        cuda_plan(offload="sequential", vae_tiling=True, vae_slicing=True),
        None,
    ]
    cpu = DevicePlan("cpu", "float32")
    assert degrade(cpu, 2) == DevicePlan("cpu", "float32", "none", True, True) and not degrade(
        cpu, 3
    )


def oom(kind: str = "cuda") -> BaseException:
    import torch

    if kind == "cuda":  # constructible on a CPU-only build of torch
        return torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    if kind == "mps":
        return RuntimeError("MPS backend out of memory (MPS allocated: 8.1 GB)")
    return RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 4 GB")


def failing(times: int, error=oom, result="image"):
    count = {"calls": 0}

    def call():
        count["calls"] += 1
        if count["calls"] <= times:
            raise error()
        return result

    return call, count


@pytest.fixture
def freed(monkeypatch) -> list[int]:
    """Counts the ladder's frees of memory (a real one takes ~0.5 s here, gc.collect)."""
    count: list[int] = []
    monkeypatch.setattr(devices, "free_memory", lambda: count.append(1))
    return count


def test_is_out_of_memory():
    assert all(is_out_of_memory(oom(kind)) for kind in ("cuda", "mps", "cpu"))
    assert not is_out_of_memory(RuntimeError("expected scalar type Half but found Float"))
    assert not is_out_of_memory(ValueError("out of memory"))  # not a runtime error
    assert not is_out_of_memory(RunCancelled())


def test_ladder_retries_then_returns_the_result():
    calls, messages = [], []
    pipe = Recorder(calls)
    call, count = failing(3)
    assert run_with_ladder(call, pipe, cuda_plan(), on_retry=messages.append) == "image"
    assert count["calls"] == 4
    assert messages == [
        "Out of GPU memory: retrying after freeing memory",
        "Out of GPU memory: retrying with VAE tiling",
        "Out of GPU memory: retrying with model CPU offload (slower)",
    ]
    assert calls == [
        "to:cuda",
        "vae.enable_tiling",
        "vae.enable_slicing",
        "enable_model_cpu_offload:cuda",
    ]
    assert applied_plan(pipe).offload == "model"


def test_ladder_skips_rungs_the_plan_already_has(freed):
    pipe, messages = Recorder([]), []
    low = cuda_plan(offload="model", vae_tiling=True, vae_slicing=True)
    call, count = failing(2, lambda: oom("mps"))
    assert run_with_ladder(call, pipe, low, on_retry=messages.append) == "image"
    assert messages[1] == "Out of GPU memory: retrying with sequential CPU offload (much slower)"
    assert pipe.calls[-1] == "enable_sequential_cpu_offload:cuda"
    assert len(freed) == count["calls"] - 1 == 2


def test_exhausted_ladder_says_what_to_change(freed):
    call, count = failing(99)
    with pytest.raises(GenerationError) as caught:
        run_with_ladder(call, Recorder([]), cuda_plan(), context="at 1024x1024")
    assert count["calls"] == 5 and len(freed) == 5  # the first try and four rungs
    assert str(caught.value) == (
        "Out of GPU memory at 1024x1024 even with VAE tiling and sequential CPU offload: lower "
        "the padding or the image size, close other programs using the GPU, or run on the CPU "
        "(SDSTUDIO_DEVICE=cpu)."
    )
    call, count = failing(99, lambda: oom("cpu"))
    with pytest.raises(GenerationError, match="^Out of memory even with VAE tiling: lower"):
        run_with_ladder(call, Recorder([]), DevicePlan("cpu", "float32"))
    assert count["calls"] == 3  # no offload rungs on the CPU


@pytest.mark.parametrize(
    "error",
    [ValueError("bad size"), RuntimeError("shape mismatch"), RunCancelled(), GenerationError("x")],
)
def test_other_errors_pass_straight_through(error, freed):
    messages, pipe = [], Recorder([])
    call, count = failing(1, lambda: error)
    with pytest.raises(type(error)) as caught:
        run_with_ladder(call, pipe, cuda_plan(), on_retry=messages.append)
    assert caught.value is error and count["calls"] == 1 and not messages
    assert pipe.calls == ["to:cuda"] and not freed


# -- decoding -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sd1_pipe():
    import torch
    from tiny_models import tiny_sd1

    torch.set_num_threads(1)
    pipe = tiny_sd1(inpainting=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def sdxl_pipe():
    from tiny_models import tiny_sdxl

    pipe = tiny_sdxl()
    pipe.set_progress_bar_config(disable=True)
    return pipe


CPU_PLAN = DevicePlan("cpu", "float32", label="CPU")


def inpaint_inputs() -> dict:
    from PIL import Image

    rng = np.random.default_rng(0)
    mask = np.zeros((64, 64), np.uint8)
    mask[16:48, 16:48] = 255
    image = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    return {"image": image, "mask_image": Image.fromarray(mask), "strength": 0.9}


def arguments(seed: int = 0, **extra) -> dict:
    import torch

    return {
        "prompt": "a red house",
        "negative_prompt": "blurry",
        "num_inference_steps": 2,
        "height": 64,
        "width": 64,
        "generator": torch.Generator("cpu").manual_seed(seed),
        **extra,
    }


def pipeline_np(pipe, **extra) -> np.ndarray:
    return pipe(**arguments(**extra), output_type="np").images


def test_run_and_decode_equals_the_sd1_pipeline(sd1_pipe):
    from sdstudio.engine.diffusion.decoding import run_and_decode

    expected = pipeline_np(sd1_pipe, **inpaint_inputs())
    ours = run_and_decode(sd1_pipe, arguments(**inpaint_inputs()), CPU_PLAN)
    assert ours.dtype == expected.dtype and ours.shape == expected.shape == (1, 64, 64, 3)
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("task", ["txt2img", "inpaint"])
def test_run_and_decode_equals_the_sdxl_pipelines(sdxl_pipe, task, dtype):
    import torch
    from diffusers import StableDiffusionXLInpaintPipeline
    from tiny_models import tiny_sdxl

    from sdstudio.engine.diffusion.decoding import run_and_decode

    pipe = sdxl_pipe
    if dtype == "float16":  # as on CUDA: the pipeline decodes in fp32 (force_upcast); so must we
        pipe = tiny_sdxl().to(torch.float16)
        pipe.set_progress_bar_config(disable=True)
    extra = {}
    if task == "inpaint":  # its latent output returns early, before freeing the offload hooks
        pipe = StableDiffusionXLInpaintPipeline.from_pipe(pipe, dtype=getattr(torch, dtype))
        pipe.set_progress_bar_config(disable=True)
        extra = inpaint_inputs()
    assert pipe.vae.config.force_upcast
    assert pipe.vae.dtype == getattr(torch, dtype)
    expected = pipeline_np(pipe, **extra)
    # (diffusers' SDXL inpaint encodes the image in fp32 and leaves its VAE in fp32 for good)
    vae_dtype = pipe.vae.dtype
    ours = run_and_decode(pipe, arguments(**extra), CPU_PLAN)
    assert pipe.vae.dtype == vae_dtype
    assert np.isfinite(ours).all() and ours.max() > 0.1
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("failures", [1, 2])
def test_a_retry_after_out_of_memory_gives_the_seeds_image(sd1_pipe, freed, failures):
    import torch

    from sdstudio.engine.diffusion.decoding import run_and_decode

    tiled = failures == 2  # the second rung tiles the VAE (the tiny VAE's tiles are 32 px)
    if tiled:
        sd1_pipe.vae.enable_tiling()
    expected = pipeline_np(sd1_pipe, **inpaint_inputs())
    sd1_pipe.vae.disable_tiling()
    left, messages = [1] * failures, []

    def fail(_module, _args):  # after the noise was drawn from the generator
        if left:
            left.pop()
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1 GiB")

    handle = sd1_pipe.unet.register_forward_pre_hook(fail)
    try:
        ours = run_and_decode(
            sd1_pipe, arguments(**inpaint_inputs()), CPU_PLAN, on_retry=messages.append
        )
        assert sd1_pipe.vae.use_tiling is tiled and applied_plan(sd1_pipe).vae_tiling is tiled
    finally:
        handle.remove()
        apply_plan(sd1_pipe, CPU_PLAN)
    assert (
        messages
        == [
            "Out of memory: retrying after freeing memory",
            "Out of memory: retrying with VAE tiling",
        ][:failures]
    )
    assert len(freed) == failures
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-5)


@pytest.fixture(scope="module")
def sd1_latents(sd1_pipe):
    """Latents of a run of the fp32 SD1 pipe."""
    return sd1_pipe(**arguments(**inpaint_inputs()), output_type="latent").images


@pytest.fixture
def half_vae(sd1_pipe, sd1_latents, monkeypatch):
    """The SD1 pipe with an fp16 VAE whose decodes are counted; restored to fp32 afterwards."""
    import torch

    vae = sd1_pipe.vae
    real, dtypes = vae.decode, []

    def counted(z, *args, **kwargs):
        dtypes.append(vae.dtype)
        return real(z, *args, **kwargs)

    monkeypatch.setattr(vae, "decode", counted)
    vae.to(dtype=torch.float16)
    yield vae, dtypes
    vae.to(dtype=torch.float32)


def test_nan_from_a_half_precision_vae_is_decoded_again_in_fp32(
    sd1_pipe, sd1_latents, half_vae, monkeypatch
):
    import torch

    from sdstudio.engine.diffusion.decoding import decode_latents

    vae, dtypes = half_vae
    latents = sd1_latents.half()
    counted = vae.decode

    def overflowing(z, *args, **kwargs):  # what an fp16 VAE overflow looks like
        out = counted(z, *args, **kwargs)
        if vae.dtype == torch.float16:
            out[0].fill_(float("nan"))
        return out

    monkeypatch.setattr(vae, "decode", overflowing)
    messages: list[str] = []
    images = decode_latents(sd1_pipe, latents, on_retry=messages.append)
    assert dtypes == [torch.float16, torch.float32] and vae.dtype == torch.float16
    assert messages == ["The image decoded NaN: decoding again in full precision"]
    assert np.isfinite(images).all() and images.max() > 0.1
    vae.to(dtype=torch.float32)
    monkeypatch.setattr(vae, "decode", counted)
    expected = decode_latents(sd1_pipe, latents.float())
    np.testing.assert_allclose(images, expected, rtol=0, atol=1e-6)


def test_nan_latents_fail_after_the_fp32_retry(sd1_pipe, half_vae):
    import torch

    from sdstudio.engine.diffusion.decoding import decode_latents

    vae, dtypes = half_vae
    latents = torch.full((1, 4, 32, 32), float("nan"), dtype=torch.float16)
    with pytest.raises(GenerationError) as caught:
        decode_latents(sd1_pipe, latents)
    assert dtypes == [torch.float16, torch.float32] and vae.dtype == torch.float16
    assert "empty image (NaN)" in str(caught.value) and "NaN latents" in str(caught.value)


def test_black_from_an_fp32_vae_fails_without_a_retry(sd1_pipe, sd1_latents, monkeypatch):
    import torch

    from sdstudio.engine.diffusion.decoding import decode_latents

    latents, decodes = sd1_latents, []

    def black(z, *args, **kwargs):
        decodes.append(z.dtype)
        return (-torch.ones(z.shape[0], 3, 64, 64),)

    monkeypatch.setattr(sd1_pipe.vae, "decode", black)
    with pytest.raises(GenerationError, match=r"empty image \(black\), so nothing was pasted"):
        decode_latents(sd1_pipe, latents, on_retry=pytest.fail)
    assert decodes == [torch.float32]


def test_safety_checker_hits_are_filtered(sd1_pipe, sd1_latents, monkeypatch):
    import torch

    from sdstudio.engine.diffusion.decoding import ImageFiltered, decode_latents

    latents = sd1_latents
    checker = type("Checker", (), {"dtype": torch.float32})()
    object.__setattr__(sd1_pipe, "safety_checker", checker)  # past the pipeline's bookkeeping
    try:
        monkeypatch.setattr(sd1_pipe, "run_safety_checker", lambda image, *_: (image, [False]))
        assert decode_latents(sd1_pipe, latents).shape == (1, 64, 64, 3)
        monkeypatch.setattr(sd1_pipe, "run_safety_checker", lambda image, *_: (image, [True]))
        with pytest.raises(ImageFiltered, match="^Filtered: the safety checker flagged"):
            decode_latents(sd1_pipe, latents)
    finally:
        object.__setattr__(sd1_pipe, "safety_checker", None)
