import os
import sys
from pathlib import Path

import numpy as np
import pytest

# No test touches the network; Qt never needs a screen.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).parent))


def _save(tmp_path_factory, name, build) -> str:
    import torch

    torch.set_num_threads(1)  # a shared 2-core machine: one thread is fastest and stable
    from tiny_models import save_tiny

    return str(save_tiny(build(), tmp_path_factory.mktemp(name) / "model"))


@pytest.fixture(scope="session")
def sd1_inpaint_model(tmp_path_factory) -> str:
    """A folder holding a tiny SD1 inpainting (9-channel UNet) model."""
    from tiny_models import tiny_sd1

    return _save(tmp_path_factory, "sd1-inpaint", lambda: tiny_sd1(inpainting=True))


@pytest.fixture(scope="session")
def sd1_model(tmp_path_factory) -> str:
    """A folder holding a tiny plain SD1 (4-channel UNet) model."""
    from tiny_models import tiny_sd1

    return _save(tmp_path_factory, "sd1", lambda: tiny_sd1(inpainting=False))


@pytest.fixture(scope="session")
def sdxl_model(tmp_path_factory) -> str:
    from tiny_models import tiny_sdxl

    return _save(tmp_path_factory, "sdxl", tiny_sdxl)


@pytest.fixture(scope="session")
def engine():
    import torch

    from sdstudio.engine.diffusers_engine import DiffusersEngine
    from sdstudio.engine.pipelines import PipelineCache

    torch.set_num_threads(1)
    return DiffusersEngine(PipelineCache(device="cpu", dtype=torch.float32))


@pytest.fixture
def photo() -> np.ndarray:
    """A 200 x 130 RGB picture with structure (gradients and a bar)."""
    h, w = 130, 200
    y, x = np.mgrid[0:h, 0:w]
    image = np.stack([x * 255 // w, y * 255 // h, (x + y) * 255 // (w + h)], axis=2).astype(
        np.uint8
    )
    image[60:70, :, :] = (30, 200, 40)
    return image


@pytest.fixture
def edge_mask() -> np.ndarray:
    """Off-centre, touching the right edge of the 200 x 130 picture."""
    mask = np.zeros((130, 200), np.uint8)
    mask[20:55, 170:200] = 255
    return mask
