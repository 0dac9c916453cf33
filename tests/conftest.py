import ipaddress
import os
import socket
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

# No test touches the network; Qt never needs a screen.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# The person's own models, settings and recovery files never reach a test: a developer with a
# LaMa installed would otherwise see Remove's "auto" take it in tests that expect the fills.
os.environ["SDSTUDIO_HOME"] = tempfile.mkdtemp(prefix="sdstudio-tests-home-")
sys.path.insert(0, str(Path(__file__).parent))

pytest_plugins = ("pytester",)  # test_network_guard runs a small suite of its own

# -- the network guard ----------------------------------------------------------------------------
# Every socket connection, datagram and name lookup of this process is checked before it happens:
# loopback (127.0.0.0/8, ::1), Unix sockets and numeric addresses pass; anything else raises
# NetworkBlocked before the real call is made, and the test that tried fails at teardown even if
# the code under test swallowed the error. Child processes the tests start are not covered.


class NetworkBlocked(RuntimeError):
    """A test tried to reach beyond this machine (not an OSError, so no retry loop hides it)."""


blocked_attempts: list[str] = []
"""What the guard refused since the current test began (read and cleared per test)."""

_real = {
    "connect": socket.socket.connect,
    "connect_ex": socket.socket.connect_ex,
    "sendto": socket.socket.sendto,
    "getaddrinfo": socket.getaddrinfo,
}
"""The functions the guard calls once an address is allowed (tests may put spies here)."""


def _is_loopback(host: object) -> bool:
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    if not isinstance(host, str):
        return False
    if host.lower() in ("localhost", "localhost.", "ip6-localhost"):
        return True
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False  # a name: resolving it would already ask a DNS server
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def _refuse(what: str) -> None:
    message = f"a test tried to reach the network: {what} (only 127.0.0.1 and ::1 are allowed)"
    blocked_attempts.append(message)
    raise NetworkBlocked(message)


def _check_address(sock: socket.socket, address: object, call: str) -> None:
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return  # Unix sockets, netlink and the like never leave the machine
    host = address[0] if isinstance(address, tuple) and address else address
    if not _is_loopback(host):
        _refuse(f"{call}({address!r})")


def _guarded_connect(self, address):
    _check_address(self, address, "connect")
    return _real["connect"](self, address)


def _guarded_connect_ex(self, address):
    _check_address(self, address, "connect_ex")
    return _real["connect_ex"](self, address)


def _guarded_sendto(self, data, *args):
    if args:  # sendto(data, address) or sendto(data, flags, address)
        _check_address(self, args[-1], "sendto")
    return _real["sendto"](self, data, *args)


def _guarded_getaddrinfo(host, *args, **kwargs):
    if host is not None and not _is_loopback(host):
        try:  # a numeric address needs no lookup; connecting to it is checked in connect()
            ipaddress.ip_address(host.decode() if isinstance(host, bytes) else host)
        except ValueError:
            _refuse(f"getaddrinfo({host!r})")
    return _real["getaddrinfo"](host, *args, **kwargs)


socket.socket.connect = _guarded_connect
socket.socket.connect_ex = _guarded_connect_ex
socket.socket.sendto = _guarded_sendto
socket.getaddrinfo = _guarded_getaddrinfo


@pytest.fixture(autouse=True)
def _no_network_reached():
    """Fails the test if the guard refused anything during it, even an error caught inside."""
    blocked_attempts.clear()
    yield
    attempts, blocked_attempts[:] = list(blocked_attempts), []
    if attempts:
        pytest.fail("\n".join(attempts), pytrace=False)


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

    from sdstudio.engine.diffusion.engine import DiffusersEngine
    from sdstudio.engine.diffusion.pipelines import PipelineCache

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


@pytest.fixture
def empty_hub(tmp_path, monkeypatch) -> Path:
    """An empty huggingface_hub cache of the test's own, read wherever the hub looks for it."""
    import huggingface_hub.constants as constants

    cache = tmp_path / "hub"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache
