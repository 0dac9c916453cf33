"""Structure + texture: the membrane fill's smooth shading under the exemplar fill's texture.

An exemplar fill copies plausible texture but, where the picture holds nothing quite alike, often
the wrong shading, which shows as a blotch (and costs it 1.0-1.4 dB of PSNR against this on
bench_fill.py). The membrane fill gets the shading right on average but has no texture. This keeps
the exemplar's detail (what a Gaussian of ``DETAIL_SIGMA`` removes) on the membrane's low
frequencies. On bench_fill.py (the product's path) it beats Telea on PSNR over blob and block holes (+1.1,
+1.7 dB) and carries much of the photo's texture (detail 0.50-0.56 against Telea's 0.06-0.11), but
scores lower on SSIM (-0.05): texture that is plausible but not the lost one correlates less with the
truth than a blur does.

``DETAIL_SIGMA`` is broad so that the exemplar also decides the edges: at 16 px a horizon through
a 120 px hole stays as sharp as the photo's (2 px), where 8 px smeared it over 29 rows for 0.2 dB
more on bench_fill.py. Holes much larger than that still get a soft tint from the far side of an
edge; plain ``patchmatch`` avoids it, with blotchier shading elsewhere.

Tried and dropped: trusting the exemplar's shading where its patches matched well (the error of the
matched patches is a poor predictor of the truth on real photos: it lost 1.3 dB); a narrower split
(sigma 4 or 8: +0.2 to +0.5 dB, but the fill reads as a soft blotch at 100% and edges blur); a
sigma growing with the hole's depth (blotch as above, -0.3 dB).
"""

from __future__ import annotations

import threading

import numpy as np

from sdstudio.engine.fill._common import Progress, Report, fill_in_box
from sdstudio.engine.fill.patchmatch import exemplar_or_none, work_box
from sdstudio.engine.fill.regions import shaded
from sdstudio.engine.fill.smooth import solve

DETAIL_SIGMA = 16.0


def structure_texture(
    rgb: np.ndarray,
    mask: np.ndarray,
    cancel: threading.Event | None = None,
    progress: Progress | None = None,
    seed: int = 0,
    report: Report | None = None,
) -> np.ndarray:
    """Exemplar texture over the membrane's shading. A part of the hole with no intact patch
    around it gets the membrane alone, noted in ``report``."""

    def fill(crop: np.ndarray, sub: np.ndarray, part: Progress | None) -> np.ndarray:
        texture = exemplar_or_none(crop, sub, cancel, part, seed, report)
        if texture is None:
            return solve(crop, sub, cancel)
        return shaded(crop, sub, texture, DETAIL_SIGMA, cancel)

    return fill_in_box(rgb, mask, cancel, work_box, fill, progress)
