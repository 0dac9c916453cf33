"""Click-to-select speed: seconds to read (embed) a 12 MP photo, and milliseconds per click.

The real Segment Anything architectures at full size with random weights (speed does not depend
on the weights): SAM ViT-Base (transformers' SamConfig defaults) and SlimSAM-uniform-77
(reconstructed: the ViT-Base layout pruned to a 168-wide encoder with 696-wide MLPs, which gives
its published size, about 9.5 M parameters / 38 MB; the mask decoder is SAM's). For each:

- embed: the whole first click on a 4000 x 3000 photo (scale to 1024, normalise, encoder);
- decode: the prompt encoder + mask decoder only, on the cached embedding (one point; a box);
- click: what a later click costs in all (decode, the mask scaled back to 12 MP, grow 8 px).

Target: <= 50 ms per click on the CPU with the small model.

    python benchmarks/bench_select.py [--device cpu|cuda] [--clicks 20] [--models slim,base]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from sdstudio.core.selection import grow
from sdstudio.engine.specialists.select import Selector

WIDTH, HEIGHT = 4000, 3000
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SLIMSAM_77 = {"hidden_size": 168, "mlp_dim": 696}
"""SlimSAM-uniform-77's encoder as reconstructed here (not read from its config.json)."""


def build(kind: str, device: str) -> Selector:
    import torch
    from transformers import SamConfig, SamModel

    torch.manual_seed(0)
    vision = SLIMSAM_77 if kind == "slim" else {}
    model = SamModel(SamConfig(vision_config=vision)).eval()
    with torch.no_grad():  # SamVisionConfig initialises with std 1e-10: denormal floats, which
        for weight in model.parameters():  # CPUs compute many times slower than trained weights
            if weight.dim() > 1:
                torch.nn.init.normal_(weight, std=0.02)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    print(f"{kind}: {params:.1f} M parameters")
    return Selector(model, side=1024, mean=MEAN, std=STD, device=device, name=kind)


def photo(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:HEIGHT:4, 0:WIDTH:4] / 1000.0
    small = np.stack([x * 60, y * 60, (x + y) * 30], axis=2) + rng.normal(0, 12, (*x.shape, 3))
    image = np.clip(small, 0, 255).astype(np.uint8).repeat(4, axis=0).repeat(4, axis=1)
    image[1000:2200, 1500:2600] = (200, 60, 40)  # an object
    return np.ascontiguousarray(image)


def sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def timed(run, device: str, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        run()
        sync(device)
        out.append(time.perf_counter() - start)
    return out


def decoder_only(selector: Selector, box: bool):
    """The prompt encoder and mask decoder alone (what ``Selector.mask`` runs on the model)."""
    import torch

    frame = selector.frame
    if box:
        inputs = {"input_boxes": torch.tensor([[[300.0, 250.0, 650.0, 560.0]]])}
    else:
        inputs = {
            "input_points": torch.tensor([[[[512.0, 400.0]]]]),
            "input_labels": torch.tensor([[[1]]]),
        }
    inputs = {k: v.to(selector.device) for k, v in inputs.items()}
    assert frame is not None

    def run():
        with torch.inference_mode():
            selector.model(image_embeddings=selector._embedding, multimask_output=not box, **inputs)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--clicks", type=int, default=20)
    parser.add_argument("--models", default="slim,base")
    args = parser.parse_args()
    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, {args.device}")
    image = photo()
    for kind in args.models.split(","):
        measure(kind, args.device, image, args.clicks)


def measure(kind: str, device: str, image: np.ndarray, clicks: int) -> None:
    selector = build(kind, device)

    def first_click() -> None:
        selector._key = None  # forget the picture: hash, scale, encode again
        selector.embed(image)

    embeds = timed(first_click, device, 2)
    point = timed(decoder_only(selector, False), device, clicks)
    boxed = timed(decoder_only(selector, True), device, clicks)
    whole = timed(lambda: grow(selector.mask([(2000, 1600, True)]), 8), device, clicks)
    print(
        f"{kind}: embed 12 MP {min(embeds):.2f} s (first {embeds[0]:.2f} s); decoder "
        f"{1000 * statistics.median(point):.1f} ms per point, "
        f"{1000 * statistics.median(boxed):.1f} ms per box; whole click at 12 MP "
        f"{1000 * statistics.median(whole):.1f} ms (median of {clicks})",
        flush=True,
    )


if __name__ == "__main__":
    main()
