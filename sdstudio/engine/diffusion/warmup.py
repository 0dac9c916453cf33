"""Import torch, diffusers and transformers on a background thread without stalling the GUI.

Two things hold Python's global lock for a long time during those imports, freezing the GUI
thread (measured with benchmarks/bench_responsiveness.py): the dynamic loader mapping torch's
shared libraries (~270 ms inside ``import torch``), and full garbage collections over the
millions of objects the imports create (50-300 ms each). Loading the libraries first through a
foreign call to libc's ``dlopen`` (ctypes releases the lock around foreign calls) and pausing the
collector during the imports, then freezing what they created, cut the longest GUI pause from
~250-290 ms to ~40-60 ms.
"""

from __future__ import annotations

import gc
import importlib.util
import sys
from pathlib import Path

_TORCH_LIBRARIES = (
    "libgomp.so.1",
    "libtorch_global_deps.so",
    "libc10.so",
    "libtorch_cpu.so",
    "libtorch.so",
    "libtorch_python.so",
)


def preload_torch_libraries() -> None:
    """dlopen torch's libraries with the GIL released, so ``import torch`` finds them loaded.
    Linux only; elsewhere (or if torch is missing) it does nothing."""
    import ctypes

    spec = importlib.util.find_spec("torch")
    if not sys.platform.startswith("linux") or spec is None or spec.origin is None:
        return
    libc = ctypes.CDLL(None)
    libc.dlopen.restype = ctypes.c_void_p
    libc.dlopen.argtypes = [ctypes.c_char_p, ctypes.c_int]
    rtld_now_global = 0x2 | 0x100
    folder = Path(spec.origin).parent / "lib"
    for name in _TORCH_LIBRARIES:
        path = folder / name
        if path.exists():
            libc.dlopen(str(path).encode(), rtld_now_global)  # a handle we never close


def import_quietly() -> None:
    """Import the heavy libraries with as little GUI stall as we can manage (call off the GUI)."""
    if "diffusers" in sys.modules and "torch" in sys.modules:
        return
    gc.disable()
    try:
        preload_torch_libraries()
        import diffusers
        import torch  # noqa: F401
        import transformers  # noqa: F401

        diffusers.StableDiffusionInpaintPipeline  # noqa: B018 - resolves diffusers' lazy import
        gc.freeze()  # start-up objects are permanent: later collections skip them
    finally:
        gc.enable()
