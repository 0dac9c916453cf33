"""Face restoration speed: detection time, and restore time per face.

- detect: ``detect_faces`` on skimage's astronaut (512 px) and on a 12 MP photo made from it
  (4000 x 3000), with the detector that needs no download (OpenCV 4's Haar cascade, or
  scikit-image's LBP cascade), and YuNet when ``--yunet FILE`` gives its model;
- restore: ``restore_faces`` per face (align, network, paste back) with the full-size GFPGAN v1.4
  and RestoreFormer architectures (random weights: speed does not depend on them), saved as
  safetensors and loaded through the product's loader. The first call (load + run) and the
  median of the later ones.

    python benchmarks/bench_faces.py [--device cpu|cuda] [--runs 3] [--yunet FILE]
        [--models gfpgan,restoreformer] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from sdstudio.engine.specialists import faces as faces_module
from sdstudio.engine.specialists.face_detect import Face, detect_faces, face_detector


def astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()


def big_photo(rgb: np.ndarray) -> np.ndarray:
    """12 MP: the photo scaled to 3000 x 3000 (uniformly), widened to 4000 by reflection."""
    square = cv2.resize(rgb, (3000, 3000), interpolation=cv2.INTER_CUBIC)
    return cv2.copyMakeBorder(square, 0, 0, 500, 500, cv2.BORDER_REFLECT)


def timed(work, runs: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(runs):
        start = time.perf_counter()
        result = work()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def bench_detect(runs: int, yunet: Path | None) -> list[Face]:
    small = astronaut()
    big = big_photo(small)
    faces: list[Face] = []
    detectors = [(face_detector(), None)]
    if yunet is not None:
        detectors.append(("YuNet", yunet))
    for name, path in detectors:
        for label, picture in (("512 x 512", small), ("4000 x 3000", big)):
            seconds, found = timed(lambda p=picture, m=path: detect_faces(p, model_path=m), runs)
            print(f"detect  {name:28s} {label:12s} {seconds * 1000:8.0f} ms  {len(found)} face(s)")
            if label == "512 x 512" and found:
                faces = found
    return faces


def gfpgan(path: Path) -> None:
    from safetensors.torch import save_file
    from spandrel.architectures.GFPGAN import GFPGAN

    model = GFPGAN(
        out_size=512,
        num_style_feat=512,
        channel_multiplier=2,
        decoder_load_path=None,
        fix_decoder=False,
        num_mlp=8,
        input_is_latent=True,
        different_w=True,
        narrow=1,
        sft_half=True,
    )
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)


def restoreformer(path: Path) -> None:
    from safetensors.torch import save_file
    from spandrel.architectures.RestoreFormer import RestoreFormer

    model = RestoreFormer()  # the released RestoreFormer's sizes (spandrel's defaults)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)


def bench_restore(names: list[str], faces: list[Face], device: str, runs: int) -> None:
    import torch

    image = astronaut()
    if not faces:
        raise SystemExit("no face found to restore")
    face = faces[:1]
    with tempfile.TemporaryDirectory() as folder:
        for name in names:
            torch.manual_seed(0)
            path = Path(folder) / f"{name}.safetensors"
            {"gfpgan": gfpgan, "restoreformer": restoreformer}[name](path)
            faces_module.clear_cache()
            start = time.perf_counter()
            faces_module.restore_faces(image, path, 1.0, faces=face, device=device)
            first = time.perf_counter() - start
            seconds, _ = timed(
                lambda p=path: faces_module.restore_faces(image, p, 1.0, faces=face, device=device),
                runs,
            )
            print(
                f"restore {name:14s} {device:5s} first (load + run) {first:6.2f} s, "
                f"then {seconds:6.2f} s per face"
            )
            faces_module.clear_cache()
            if device.startswith("cuda"):
                torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--yunet", type=Path, help="YuNet's model file, if you have it")
    parser.add_argument("--models", default="gfpgan,restoreformer")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    args = parser.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, device {args.device}")
    faces = bench_detect(args.runs, args.yunet)
    bench_restore([m for m in args.models.split(",") if m], faces, args.device, args.runs)


if __name__ == "__main__":
    main()
