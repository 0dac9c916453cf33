"""LoRAs and textual-inversion embeddings on a loaded pipeline, without reloading the base model.

LoRAs are loaded once into the pipeline as named PEFT adapters (diffusers' PEFT backend, which
needs the ``peft`` package) and switched on and off with their weights per run. Embeddings add
tokens to the tokenizer(s) and rows to the text encoder(s). Only ``.safetensors`` files are read.

Task pipelines made with ``from_pipe`` share the UNet, text encoders and tokenizers with the base
pipeline, so whatever is applied through one of them is in effect for all of them.
torch and diffusers are imported inside the functions, never at module import.
"""

from __future__ import annotations

import hashlib
import logging
import re
import warnings
import weakref
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from sdstudio.core.errors import ModelError

log = logging.getLogger(__name__)

SAFE_SUFFIX = ".safetensors"
UNSAFE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl")


def _require_safetensors(path: Path, what: str) -> None:
    if path.suffix.lower() != SAFE_SUFFIX:
        raise ModelError(
            f"Cannot load the {what} '{path.name}': only .safetensors files are loaded, because "
            f"{path.suffix or 'such'} files can run code when opened. Convert it to .safetensors "
            "(for example with the 'safetensors' convert tool) or get a .safetensors version."
        )
    if not path.is_file():
        raise ModelError(f"The {what} '{path}' does not exist (moved or deleted?).")


def _adapter_name(path: Path) -> str:
    stem = re.sub(r"\W", "_", path.stem)[:40]
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:8]
    return f"{stem}_{digest}"


class AdapterState:
    """Which LoRAs are loaded into a pipeline's modules, and which are switched on.

    One instance per engine. It follows the pipeline's UNet: when a new model is loaded (another
    UNet), it forgets what it knew and starts again. At most ``keep`` LoRAs stay loaded; the
    least recently used ones that are not active are unloaded first.
    """

    def __init__(self, keep: int = 8) -> None:
        self.keep = keep
        self._unet: Any = None  # a weak reference to the UNet holding the adapters
        self._names: dict[Path, str] = {}  # loaded adapters, least recently used first
        self._active: tuple[tuple[Path, float], ...] = ()
        self._synced = True  # False after a failed load: set the adapters again next time

    @property
    def active(self) -> tuple[tuple[Path, float], ...]:
        """The LoRAs switched on by the last ``apply``, with their weights."""
        return self._active

    @property
    def loaded(self) -> tuple[Path, ...]:
        return tuple(self._names)

    def apply(self, pipe: Any, loras: Sequence[tuple[Path, float]]) -> None:
        """Switch on exactly ``loras`` (file, weight) on ``pipe``; an empty list switches all off.

        Files not yet loaded are loaded; the base model is never reloaded. A LoRA listed twice
        gets the sum of its weights.
        """
        self._follow(pipe)
        wanted: dict[Path, float] = {}
        for path, weight in loras:
            path = Path(path).expanduser().resolve()
            _require_safetensors(path, "LoRA")
            wanted[path] = wanted.get(path, 0.0) + float(weight)
        if tuple(wanted.items()) == self._active and self._synced:
            return
        for path in wanted:
            self._load(pipe, path)
        if wanted:
            pipe.enable_lora()
            pipe.set_adapters([self._names[p] for p in wanted], list(wanted.values()))
        elif self._names:
            pipe.disable_lora()  # the base model's output, exactly
        self._active, self._synced = tuple(wanted.items()), True
        self._evict(pipe)

    def _follow(self, pipe: Any) -> None:
        unet = self._unet() if self._unet is not None else None
        if unet is not pipe.unet:
            self._unet = weakref.ref(pipe.unet)
            self._names.clear()
            self._active = ()

    def _load(self, pipe: Any, path: Path) -> None:
        if path in self._names:
            self._names[path] = self._names.pop(path)  # most recently used now
            return
        from diffusers.utils import USE_PEFT_BACKEND

        if not USE_PEFT_BACKEND:
            raise ModelError("LoRAs need the 'peft' package: install it with 'pip install peft'.")
        name = _adapter_name(path)
        try:
            with warnings.catch_warnings():  # peft's notes on adding (or, failing, removing) one
                warnings.filterwarnings("ignore", message="Already found a `peft_config`")
                warnings.filterwarnings("ignore", message=".*was active which is now deleted")
                pipe.load_lora_weights(
                    str(path.parent),
                    weight_name=path.name,
                    adapter_name=name,
                    use_safetensors=True,
                    local_files_only=True,
                )
        except Exception as error:  # safetensors, diffusers and peft raise many kinds
            self._synced = False
            _forget_partial(pipe, name)
            raise ModelError(
                f"Could not load the LoRA '{path.name}' ({_first_line(error)}). Is it a LoRA "
                "for this model's family (SD1.x or SDXL)?"
            ) from error
        self._names[path] = name
        log.info("Loaded LoRA %s as adapter %s", path, name)

    def _evict(self, pipe: Any) -> None:
        active = {path for path, _ in self._active}
        spare = [path for path in self._names if path not in active]
        while len(self._names) > self.keep and spare:
            path = spare.pop(0)
            pipe.delete_adapters(self._names.pop(path))
            log.info("Unloaded LoRA %s", path)


def _first_line(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    return (lines[0].rstrip(":. ") if lines else "") or type(error).__name__


def _forget_partial(pipe: Any, name: str) -> None:
    """Remove what a failed load left behind under ``name`` (if anything)."""
    try:
        present = {n for names in pipe.get_list_adapters().values() for n in names}
        if name in present:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "was active which is now deleted"
                pipe.delete_adapters(name)
    except Exception:  # the original error is the one to report
        log.debug("Cleaning up adapter %s failed", name, exc_info=True)


def find_lora(name: str, folders: Iterable[Path]) -> Path:
    """The LoRA file ``<lora:name>`` stands for: ``name`` or ``name.safetensors`` in one of
    ``folders`` or their subfolders, compared without regard to case. ``name`` may hold a
    subfolder (``style/ink``). The first folder that has it wins."""
    folders = [Path(f).expanduser() for f in folders]
    wanted = name.strip().replace("\\", "/").casefold()
    if wanted.endswith(UNSAFE_SUFFIXES):
        raise ModelError(
            f"<lora:{name}> names a {Path(wanted).suffix} file: only .safetensors LoRAs are "
            "loaded, because pickled files can run code when opened. Convert it to .safetensors."
        )
    wanted = wanted.removesuffix(SAFE_SUFFIX)
    available: list[str] = []
    unsafe: list[Path] = []
    for folder in folders:
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*"), key=lambda p: (len(p.parts), str(p).casefold())):
            if not path.is_file():
                continue
            relative = path.relative_to(folder).with_suffix("").as_posix()
            suffix = path.suffix.lower()
            if suffix == SAFE_SUFFIX:
                if wanted in (relative.casefold(), path.stem.casefold()):
                    return path
                available.append(relative)
            elif suffix in UNSAFE_SUFFIXES and wanted in (
                relative.casefold(),
                path.stem.casefold(),
            ):
                unsafe.append(path)
    if unsafe:
        raise ModelError(
            f"The LoRA '{name}' is only there as {unsafe[0].name}: only .safetensors LoRAs are "
            "loaded, because pickled files can run code when opened. Convert it to .safetensors."
        )
    where = ", ".join(str(f) for f in folders) or "(no LoRA folder is set)"
    if not available:
        raise ModelError(f"No LoRA named '{name}': there are no .safetensors LoRAs in {where}.")
    listed = ", ".join(sorted(available, key=str.casefold)[:30])
    more = f" and {len(available) - 30} more" if len(available) > 30 else ""
    raise ModelError(f"No LoRA named '{name}' in {where}. Available: {listed}{more}.")


def find_embeddings(text: str, folders: Iterable[Path]) -> list[Path]:
    """The embedding files (``.safetensors`` in ``folders``, subfolders too) whose name appears
    in ``text`` as a word of its own, as AUTOMATIC1111 picks them; the first folder wins."""
    found: dict[str, Path] = {}
    for folder in (Path(f).expanduser() for f in folders):
        if folder.is_dir():
            for path in sorted(folder.rglob(f"*{SAFE_SUFFIX}")):
                found.setdefault(path.stem, path)
    return [
        path
        for stem, path in found.items()
        if re.search(rf"(?<![\w-]){re.escape(stem)}(?![\w-])", text)
    ]


def load_embedding(pipe: Any, path: Path, token: str | None = None) -> str:
    """Load a textual-inversion embedding; returns the token that calls it in a prompt.

    ``token`` defaults to the file name without its extension. SD1 files hold one tensor
    (``emb_params``, or diffusers' ``{token: tensor}``); SDXL files hold ``clip_l`` and ``clip_g``,
    loaded into the first and second text encoder. Loading a token that is already there is a
    no-op (the tokenizer is shared by all task pipelines of the model).
    """
    path = Path(path).expanduser()
    _require_safetensors(path, "embedding")
    token = (token or path.stem).strip()
    if not token:
        raise ModelError(f"The embedding '{path.name}' needs a token name to be called by.")
    first_tokenizer = pipe.tokenizer if pipe.tokenizer is not None else pipe.tokenizer_2
    if token in first_tokenizer.added_tokens_encoder:
        return token
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise ModelError(f"The embedding '{path.name}' cannot be read: {error}") from error
    targets = _embedding_targets(pipe, path, tensors)
    for vectors, tokenizer, encoder in targets:
        if token in tokenizer.get_vocab():
            raise ModelError(
                f"Cannot load the embedding '{path.name}' as '{token}': the model already knows "
                "that word. Rename the file (its name is the token you type in the prompt)."
            )
        width = encoder.get_input_embeddings().weight.shape[-1]
        if vectors.shape[-1] != width:
            raise ModelError(
                f"The embedding '{path.name}' has {vectors.shape[-1]}-wide vectors, but this "
                f"model's text encoder takes {width}: it was made for another model family."
            )
    try:
        for vectors, tokenizer, encoder in targets:
            pipe.load_textual_inversion(
                vectors, token=token, tokenizer=tokenizer, text_encoder=encoder
            )
    except ValueError as error:
        raise ModelError(
            f"Could not load the embedding '{path.name}' as '{token}' ({_first_line(error)})."
        ) from error
    log.info("Loaded embedding %s as token %s", path, token)
    return token


def _embedding_targets(pipe: Any, path: Path, tensors: dict[str, Any]) -> list[tuple]:
    """(vectors, tokenizer, text encoder) for each encoder the embedding file feeds."""
    sdxl_pipe = getattr(pipe, "text_encoder_2", None) is not None
    if "clip_l" in tensors or "clip_g" in tensors:
        if not sdxl_pipe:
            raise ModelError(
                f"'{path.name}' is an SDXL embedding (clip_l/clip_g); the model loaded is SD1.x."
            )
        pairs = [("clip_l", pipe.tokenizer, pipe.text_encoder)]
        pairs.append(("clip_g", pipe.tokenizer_2, pipe.text_encoder_2))
        missing = [key for key, _, encoder in pairs if encoder is not None and key not in tensors]
        if missing:
            raise ModelError(f"The SDXL embedding '{path.name}' lacks its '{missing[0]}' tensor.")
        return [(tensors[k], tok, enc) for k, tok, enc in pairs if enc is not None]
    if "emb_params" in tensors:
        vectors = tensors["emb_params"]
    elif len(tensors) == 1:
        vectors = next(iter(tensors.values()))
    else:
        raise ModelError(
            f"'{path.name}' is not a textual-inversion embedding this program knows (it holds "
            f"{', '.join(sorted(tensors)[:5])})."
        )
    if sdxl_pipe:
        raise ModelError(
            f"'{path.name}' is an SD1.x-style embedding (one tensor); the model loaded is SDXL, "
            "whose embeddings hold clip_l and clip_g tensors."
        )
    return [(vectors, pipe.tokenizer, pipe.text_encoder)]
