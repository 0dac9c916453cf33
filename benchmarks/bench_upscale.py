"""Upscaling on the CPU: seconds per output megapixel for the compact SRVGGNet
(realesr-general-x4v3's sizes: 64 features, 32 convolutions) and for RRDB x4plus (64 filters,
23 blocks), both with random weights (the timing does not depend on the values), run through the
product's path (a .safetensors file, loading.load_model, the tiler); and the peak memory (RSS,
measured in a subprocess) of a 4x upscale of a 12 MP photo with the compact model, tiled.

    python benchmarks/bench_upscale.py [--size 256] [--threads N] [--skip-12mp]
    python benchmarks/bench_upscale.py --memory-only

``--memory-only`` measures the 12 MP memory alone with a thin compact model (8 features instead
of 64): a 64-feature model takes about 19 minutes of a 2-core CPU for it, and its activations for
one 256 px tile (64 x 1024 x 1024 floats at the output, a few such maps) add a few hundred MB at
most to what the thin model shows; the picture, the output and the tiler's strips are the same.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _save(kind: str, folder: Path, features: int = 64) -> Path:
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    if kind == "compact":
        from spandrel.architectures.Compact import Compact

        model = Compact(num_in_ch=3, num_out_ch=3, num_feat=features, num_conv=32, upscale=4)
    else:
        from spandrel.architectures.ESRGAN import ESRGAN

        model = ESRGAN(in_nc=3, out_nc=3, num_filters=64, num_blocks=23, scale=4)
    with torch.no_grad():  # small weights: no denormals or overflow to slow the CPU
        for parameter in model.parameters():
            parameter.mul_(0.1)
    path = folder / f"{kind}-{features}-x4.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def seconds_per_megapixel(path: Path, size: int, tile: int) -> float:
    import numpy as np

    from sdstudio.engine.specialists.upscale import upscale

    image = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    upscale(image[:32, :32], 4, path, tile=tile, device="cpu")  # load and warm up
    started = time.perf_counter()
    out = upscale(image, 4, path, tile=tile, device="cpu")
    seconds = time.perf_counter() - started
    return seconds / (out.shape[0] * out.shape[1] / 1e6)


def _peak_child(path: str, tile: int) -> None:
    """Runs in a subprocess: a 4x upscale of a 12 MP (4000 x 3000) photo; prints peak RSS."""
    import numpy as np

    from sdstudio.engine.specialists.upscale import upscale

    image = np.random.default_rng(0).integers(0, 256, (3000, 4000, 3), dtype=np.uint8)
    started = time.perf_counter()
    out = upscale(image, 4, Path(path), tile=tile, device="cpu")
    seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{out.shape[1]}x{out.shape[0]} {seconds:.0f} s peak {peak_mb:.0f} MB")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=256, help="input side for the timings")
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--skip-12mp", action="store_true")
    parser.add_argument("--memory-only", action="store_true", help="12 MP memory, thin model")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        _peak_child(args.child[0], int(args.child[1]))
        return 0
    with tempfile.TemporaryDirectory(prefix="bench_upscale") as temp:
        folder = Path(temp)
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, tile {args.tile}")
        for kind in () if args.memory_only else ("compact", "rrdb"):
            path = _save(kind, folder)
            rate = seconds_per_megapixel(path, args.size, args.tile)
            print(f"{kind:8s} 4x of {args.size}x{args.size}: {rate:.1f} s per output MP")
        if not args.skip_12mp:
            path = _save("compact", folder, 8 if args.memory_only else 64)
            command = [sys.executable, __file__, "--child", str(path), str(args.tile)]
            if args.threads:
                command += ["--threads", str(args.threads)]
            result = subprocess.run(command, capture_output=True, text=True, check=False)
            name = "thin compact (8 features)" if args.memory_only else "compact"
            print(f"{name} 4x of 12 MP:", result.stdout.strip() or result.stderr.strip()[-500:])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
