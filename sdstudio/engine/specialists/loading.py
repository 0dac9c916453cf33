"""The one way specialist models (LaMa, upscalers, face restorers...) are read and built.

Weights are read as tensors only: a ``.safetensors`` file directly; a pickle-format file (``.pth``
``.ckpt`` ``.pt`` ``.bin``) never by itself, but once, when the person agrees, converted to a
``.safetensors`` file beside it through ``torch.load(path, weights_only=True, map_location="cpu")``
(torch's tensor-only unpickler, passed explicitly: ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` only
changes loads that leave ``weights_only`` unset, torch/serialization.py ``load``), and that file is
loaded from then on. TorchScript archives (code) are refused. The network is built by spandrel's
main package (permissively licensed architectures); ``spandrel_extra_arches`` is never loaded.

torch and spandrel are imported inside the functions that need them: listing models
(``describe``, ``scan_specialists``) reads file headers only, cheap enough for the GUI thread.
"""

from __future__ import annotations

import json
import struct
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sdstudio.core.atomic import write_atomically
from sdstudio.core.errors import ModelError

SPECIALISTS_FOLDER = "specialists"
PICKLE_SUFFIXES = (".pth", ".ckpt", ".pt", ".bin")
SUFFIXES = (".safetensors", *PICKLE_SUFFIXES)
CONTAINER_KEYS = ("params_ema", "params", "state_dict", "model", "generator")
"""Keys under which training code nests the weights; the first that holds tensors is used."""
HEADER_LIMIT = 64 * 1024 * 1024
"""A safetensors header larger than this is not believed (the file is damaged or not one)."""


def specialists_dir(models: Path) -> Path:
    """Where specialist models live, as single files: ``<models folder>/specialists``."""
    return Path(models) / SPECIALISTS_FOLDER


class PickleConsentNeeded(ModelError):
    """A pickle-format model that has not been converted to ``.safetensors`` yet: converting it
    (``convert_to_safetensors``) needs the person's agreement. ``path``: the pickle file."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        super().__init__(
            f"'{self.path.name}' is a pickle-format model ({self.path.suffix}), which could run "
            "code if opened as it is. Convert it once to .safetensors (its tensors only are read) "
            "in Models > Model library, or on the command line with: "
            f"python -m sdstudio.engine.specialists.loading '{self.path}'"
        )


@dataclass(frozen=True)
class SpecialistInfo:
    """What a specialist model file is, from its name and header only (nothing is loaded).

    ``purpose``: "removal", "upscale", "face", "restore"... ``licence``: the architecture's
    published licence where known (the weights' own page may add terms). ``problem``: why it
    cannot be used, in words, or None. ``needs_conversion``: a pickle not yet converted."""

    path: Path
    name: str
    architecture: str | None = None
    purpose: str | None = None
    licence: str | None = None
    problem: str | None = None
    needs_conversion: bool = False

    @property
    def usable(self) -> bool:
        return self.problem is None and not self.needs_conversion


# (architecture, purpose, licence, key sets: any set all of whose keys are present matches).
# The key names are spandrel's own detection keys (spandrel/architectures/*/__init__.py).
_SIGNATURES: tuple[tuple[str, str, str | None, tuple[tuple[str, ...], ...]], ...] = (
    (
        "LaMa",
        "removal",
        "Apache-2.0",
        (("model.model.1.bn_l.running_mean",), ("generator.model.1.bn_l.running_mean",)),
    ),
    (
        "ESRGAN",
        "upscale",
        "Apache-2.0",
        (
            ("model.0.weight", "model.1.sub.0.RDB1.conv1.0.weight"),
            ("conv_first.weight", "body.0.rdb1.conv1.weight", "conv_body.weight"),
        ),
    ),
    (
        "SwinIR",
        "upscale",
        "Apache-2.0",
        (("layers.0.residual_group.blocks.0.norm1.weight", "conv_first.weight"),),
    ),
    ("GFPGAN", "face", "Apache-2.0", (("toRGB.0.weight", "stylegan_decoder.style_mlp.1.weight"),)),
    ("SCUNet", "restore", "Apache-2.0", (("m_head.0.weight", "m_tail.0.weight"),)),
    ("NAFNet", "restore", "MIT", (("intro.weight", "ending.weight", "middle_blks.0.beta"),)),
)
_NOT_LOADED = {
    # spandrel_extra_arches only: never loaded (licence), said so in the library
    "MAT": (
        ("synthesis.first_stage.conv_first.conv.resample_filter",),
        "MAT is licensed for non-commercial use only (CC BY-NC 4.0) and SD Studio does not load "
        "it; use a LaMa model instead",
    ),
}


def _safetensors_keys(path: Path) -> set[str]:
    """The tensor names in a safetensors file's header (8-byte length, then JSON)."""
    with open(path, "rb") as file:
        head = file.read(8)
        if len(head) < 8:
            raise ValueError("too short")
        (size,) = struct.unpack("<Q", head)
        if size > HEADER_LIMIT:
            raise ValueError("header too large")
        header = json.loads(file.read(size))
    if not isinstance(header, dict):
        raise ValueError("header is not a table")
    return {key for key in header if key != "__metadata__"}


def _is_torchscript(path: Path) -> bool:
    """A zip (torch.save's format) holding TorchScript's code: ``constants.pkl`` or ``code/``."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    return any(n.split("/", 1)[-1] == "constants.pkl" or "/code/" in f"/{n}" for n in names)


def _torchscript_refusal(path: Path) -> ModelError:
    return ModelError(
        f"'{path.name}' is a TorchScript archive: it holds code, which SD Studio never runs. "
        "Use a .safetensors (or plain .pth weights) version of this model instead."
    )


def describe(path: Path) -> SpecialistInfo:
    """What ``path`` is, cheaply (a header or a zip directory read; nothing unpickled)."""
    path = Path(path)
    name = path.stem
    suffix = path.suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        sibling = path.with_suffix(".safetensors")
        if sibling.is_file():
            return describe(sibling)
        try:
            if _is_torchscript(path):
                return SpecialistInfo(path, name, problem=str(_torchscript_refusal(path)))
        except OSError as error:
            return SpecialistInfo(path, name, problem=f"Cannot read it: {error.strerror}.")
        return SpecialistInfo(path, name, needs_conversion=True)
    if suffix != ".safetensors":
        return SpecialistInfo(
            path, name, problem=f"Not a model file SD Studio reads ({path.suffix or 'no suffix'})."
        )
    try:
        keys = _safetensors_keys(path)
    except (OSError, ValueError, UnicodeDecodeError) as error:
        why = error.strerror if isinstance(error, OSError) else "its header is damaged"
        return SpecialistInfo(path, name, problem=f"Cannot read it as safetensors: {why}.")
    for architecture, (needed, why) in _NOT_LOADED.items():
        if set(needed) <= keys:
            return SpecialistInfo(path, name, architecture, "removal", "CC-BY-NC-4.0", why)
    for architecture, purpose, licence, key_sets in _SIGNATURES:
        if any(set(needed) <= keys for needed in key_sets):
            return SpecialistInfo(path, name, architecture, purpose, licence)
    return SpecialistInfo(path, name)


def scan_specialists(models: Path) -> list[SpecialistInfo]:
    """Every model file in ``specialists_dir(models)``, sorted by name; a pickle that has been
    converted is listed once, as its ``.safetensors``."""
    folder = specialists_dir(models)
    try:
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in SUFFIXES and p.is_file())
    except OSError:
        return []
    seen: set[Path] = set()
    infos = []
    for path in files:
        info = describe(path)
        if info.path in seen:
            continue
        seen.add(info.path)
        infos.append(info)
    return sorted(infos, key=lambda i: i.name.lower())


_TABLES = (dict, OrderedDict)
"""What a table of weights may be: ``state_dict()`` gives an OrderedDict (Real-ESRGAN's and
GFPGAN's published .pth files hold one under ``params_ema``)."""


def _plain_tensors(value) -> bool:
    import torch

    return (
        type(value) in _TABLES
        and bool(value)
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items())
    )


def _unwrap(loaded, path: Path) -> dict:
    """The plain ``{name: tensor}`` table in what ``torch.load`` gave: itself, or one of its
    ``CONTAINER_KEYS`` (nested once or twice, as training code saves them)."""
    for _ in range(3):
        if _plain_tensors(loaded):
            return loaded
        if type(loaded) not in _TABLES:
            break
        inner = next((loaded[k] for k in CONTAINER_KEYS if type(loaded.get(k)) in _TABLES), None)
        if inner is None:
            break
        loaded = inner
    raise ModelError(
        f"'{path.name}' holds no plain table of weights (tensors by name) that SD Studio "
        "recognises, so it cannot be converted. Look for a .safetensors version of this model."
    )


def convert_to_safetensors(path: Path) -> Path:
    """Convert the pickle-format model ``path`` to ``<stem>.safetensors`` beside it (written
    atomically) and return the new path. Tensors only are read (``weights_only=True`` passed
    explicitly); a file that needs anything else, or a TorchScript archive, is refused."""
    import pickle

    import torch
    from safetensors.torch import save

    path = Path(path)
    if path.suffix.lower() == ".safetensors":
        return path
    if path.suffix.lower() not in PICKLE_SUFFIXES:
        raise ModelError(f"'{path.name}' is not a model file SD Studio can convert.")
    if not path.is_file():
        raise ModelError(f"'{path}' does not exist.")
    if _is_torchscript(path):
        raise _torchscript_refusal(path)
    try:
        loaded = torch.load(path, weights_only=True, map_location="cpu")
    except (pickle.UnpicklingError, RuntimeError, EOFError, AttributeError, ValueError) as error:
        raise ModelError(
            f"'{path.name}' holds more than plain weights (opening it would run code, or it is "
            "damaged), so SD Studio does not convert it. Look for a .safetensors version."
        ) from error
    tensors = {
        k: v.detach().to("cpu").contiguous().clone() for k, v in _unwrap(loaded, path).items()
    }
    target = path.with_suffix(".safetensors")
    payload = save(tensors, metadata={"format": "pt", "converted_from": path.name})
    write_atomically(target.name, target, payload, error=ModelError)
    return target


def load_state_dict(path: Path) -> dict:
    """``{name: tensor}`` of a specialist model, on the CPU: a ``.safetensors`` file directly; a
    pickle-format file through its converted ``.safetensors`` sibling, else
    ``PickleConsentNeeded``."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        sibling = path.with_suffix(".safetensors")
        if not sibling.is_file():
            if path.is_file() and _is_torchscript(path):
                raise _torchscript_refusal(path)
            raise PickleConsentNeeded(path)
        path = sibling
    elif suffix != ".safetensors":
        raise ModelError(
            f"'{path.name}' is not a model file SD Studio reads: use a .safetensors file "
            "(or a .pth/.ckpt/.pt converted once in Models > Model library)."
        )
    if not path.is_file():
        raise ModelError(f"The model file '{path}' does not exist.")
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(path, device="cpu")
    except (SafetensorError, OSError, ValueError) as error:
        raise ModelError(
            f"'{path.name}' cannot be read as safetensors ({error}); download it again."
        ) from error


def pick_device(device: str | None = None) -> str:
    """``device``, or CUDA when there is one, else the CPU."""
    if device:
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_model(path: Path, device: str | None = None):
    """The model in ``path`` built by spandrel (``spandrel.ImageModelDescriptor`` or
    ``MaskedImageModelDescriptor``), in eval mode on ``device`` (default: CUDA when available,
    else the CPU), half precision on CUDA where the architecture supports it."""
    from spandrel import MAIN_REGISTRY, ModelLoader, UnsupportedModelError

    state = load_state_dict(path)
    if "generator.model.1.bn_l.running_mean" in state:  # a LaMa training checkpoint: its
        state = {k: v for k, v in state.items() if k.startswith("generator.")}  # generator only
    try:
        descriptor = ModelLoader(registry=MAIN_REGISTRY).load_from_state_dict(state)
    except UnsupportedModelError as error:
        raise ModelError(
            f"'{Path(path).name}' is not a model architecture SD Studio can load (spandrel "
            "recognises no architecture in it)."
        ) from error
    except (KeyError, RuntimeError, ValueError) as error:
        raise ModelError(f"'{Path(path).name}' could not be built: {error}") from error
    if not type(descriptor.architecture).__module__.startswith("spandrel.architectures."):
        raise ModelError(f"'{Path(path).name}' needs an architecture SD Studio does not load.")
    device = pick_device(device)
    descriptor.eval().to(device)
    if device.startswith("cuda") and descriptor.supports_half:
        descriptor.half()
    return descriptor


class ModelCache:
    """One model of a kind kept loaded between runs (LaMa, an upscaler, a face restorer), keyed
    by its file's path, modification time and size, and the device: a changed file is loaded
    again, and loading another drops the one held. ``check(descriptor, path)`` raises a
    ``ModelError`` for a model of the wrong kind. Callers hold their own lock around a run."""

    def __init__(self, kind: str, check: Callable[[object, Path], None]) -> None:
        self.kind = kind
        self._check = check
        self._held: dict[tuple, object] = {}

    def get(self, path: Path, device: str):
        path = Path(path)
        try:
            stat = path.stat()
        except OSError as error:
            raise ModelError(
                f"The {self.kind} '{path}' cannot be read: {error.strerror}."
            ) from error
        key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size, device)
        if key not in self._held:
            self._held.clear()  # one model of this kind in memory at a time
            descriptor = load_model(path, device)
            self._check(descriptor, path)
            self._held[key] = descriptor
        return self._held[key]

    def clear(self) -> None:
        self._held.clear()


def main(argv: list[str] | None = None) -> int:
    """``python -m sdstudio.engine.specialists.loading FILE...``: convert pickles (consent given
    by running it)."""
    import sys

    code = 0
    for name in sys.argv[1:] if argv is None else argv:
        try:
            print(f"Wrote {convert_to_safetensors(Path(name))}")
        except ModelError as error:
            print(error, file=sys.stderr)
            code = 1
    return code


if __name__ == "__main__":
    raise SystemExit(main())
