"""How a picture was made, read from what the common generators store in it.

- AUTOMATIC1111 (and Forge, SD.Next, SD Studio itself): the "parameters" text, in a PNG text
  chunk or the EXIF UserComment of a JPEG or WebP (``sdstudio.core.metadata``).
- ComfyUI: a "prompt" text chunk holding the executed node graph as JSON. The sampler node
  (KSampler and kin) gives steps, CFG, seed and sampler; its positive and negative inputs lead,
  through any conditioning nodes, to the text encoders; its model input to the checkpoint
  loader; its latent input to the empty latent's size.
- InvokeAI: an "invokeai_metadata" JSON chunk (3.x and later) or "sd-metadata" (2.x).

The result is a ``Provenance``: who made it and the settings in the Generate panel's terms, so
"use these parameters" can show them. Everything here is parsing of untrusted text: malformed
or hostile input gives None or a partial result, never an exception.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sdstudio.core.metadata import NEGATIVE_PROMPT, PROMPT, parse_parameters

MAX_TEXT = 4 * 2**20
"""Metadata texts longer than this are ignored (a ComfyUI workflow is rarely above 200 KB)."""
MAX_DEPTH = 24
"""How many nodes a ComfyUI link is followed through before giving up (cycles, long chains)."""

INVOKEAI_NUMBERS = (
    ("steps", "steps", int),
    ("guidance", "cfg_scale", float),
    ("seed", "seed", int),
    ("width", "width", int),
    ("height", "height", int),
    ("strength", "strength", float),
)
"""Panel key, InvokeAI's name (2.x and 3.x alike), and type of the numeric settings."""
SAMPLER_NODES = ("KSampler", "KSamplerAdvanced", "SamplerCustom", "SamplerCustomAdvanced")
COMFY_SAMPLERS = {
    "euler": "Euler",
    "euler_ancestral": "Euler a",
    "dpmpp_2m": "DPM++ 2M",
    "ddim": "DDIM",
    "uni_pc": "UniPC",
    "uni_pc_bh2": "UniPC",
    "lcm": "LCM",
}
"""ComfyUI sampler names that match one of ours (with scheduler "karras", dpmpp_2m is
"DPM++ 2M Karras")."""


@dataclass(frozen=True)
class Provenance:
    generator: str
    """"SD Studio", "AUTOMATIC1111", "ComfyUI" or "InvokeAI"."""
    settings: dict[str, Any] = field(default_factory=dict)
    """In the Generate panel's keys: prompt, negative_prompt, steps, guidance, seed,
    scheduler (a sampler name), width, height, model, strength; only those found."""

    def summary(self) -> str:
        s = self.settings
        parts = [f"made with {self.generator}"]
        if s.get("prompt"):
            prompt = " ".join(str(s["prompt"]).split())
            parts.append(f'"{prompt[:60]}…"' if len(prompt) > 60 else f'"{prompt}"')
        for key, label in (("steps", "steps"), ("seed", "seed"), ("model", "model")):
            if s.get(key) is not None:
                parts.append(f"{label} {s[key]}")
        return ", ".join(parts)


def read_provenance(texts: Mapping[str, str]) -> Provenance | None:
    """The provenance in a picture's text metadata (PNG chunks by key; "parameters" for the
    EXIF UserComment of JPEG and WebP), or None when there is none or it is unreadable."""
    texts = {k: v for k, v in texts.items() if isinstance(v, str) and len(v) <= MAX_TEXT}
    for key, reader in (
        ("parameters", _automatic1111),
        ("invokeai_metadata", _invokeai),
        ("sd-metadata", _invokeai_2),
        ("prompt", _comfyui),
    ):
        if key in texts:
            try:
                found = reader(texts[key])
            except (ValueError, TypeError, KeyError, AttributeError, IndexError, RecursionError):
                found = None
            if found is not None and found.settings:
                return found
    return None


def _automatic1111(text: str) -> Provenance | None:
    if not text.strip():
        return None
    values = parse_parameters(text)
    settings: dict[str, Any] = {}
    if values.get(PROMPT):
        settings["prompt"] = values[PROMPT]
    if values.get(NEGATIVE_PROMPT):
        settings["negative_prompt"] = values[NEGATIVE_PROMPT]
    for key, name, kind in (
        ("steps", "Steps", int),
        ("guidance", "CFG scale", float),
        ("seed", "Seed", int),
        ("strength", "Denoising strength", float),
    ):
        _put(settings, key, values.get(name), kind)
    if values.get("Sampler"):
        settings["scheduler"] = values["Sampler"]
    if values.get("Model"):
        settings["model"] = values["Model"]
    _put_size(settings, values.get("Size"))
    version = values.get("Version", "")
    return Provenance("SD Studio" if version.startswith("sdstudio") else "AUTOMATIC1111", settings)


def _invokeai(text: str) -> Provenance | None:
    data = json.loads(text)
    if not isinstance(data, dict):
        return None
    settings: dict[str, Any] = {}
    for key, name in (("prompt", "positive_prompt"), ("negative_prompt", "negative_prompt")):
        if isinstance(data.get(name), str) and data[name]:
            settings[key] = data[name]
    for key, name, kind in INVOKEAI_NUMBERS:
        _put(settings, key, data.get(name), kind)
    if isinstance(data.get("scheduler"), str):
        settings["scheduler"] = data["scheduler"]
    model = data.get("model")
    if isinstance(model, dict):
        model = model.get("name") or model.get("model_name")
    if isinstance(model, str) and model:
        settings["model"] = model
    return Provenance("InvokeAI", settings)


def _invokeai_2(text: str) -> Provenance | None:
    data = json.loads(text)
    image = data.get("image") if isinstance(data, dict) else None
    if not isinstance(image, dict):
        return None
    settings: dict[str, Any] = {}
    prompt = image.get("prompt")
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], dict):
        prompt = prompt[0].get("prompt")
    if isinstance(prompt, str) and prompt:
        settings["prompt"] = prompt
    for key, name, kind in INVOKEAI_NUMBERS:
        _put(settings, key, image.get(name), kind)
    if isinstance(image.get("sampler"), str):
        settings["scheduler"] = image["sampler"]
    if isinstance(data.get("model_weights"), str):
        settings["model"] = data["model_weights"]
    return Provenance("InvokeAI", settings)


def _comfyui(text: str) -> Provenance | None:
    graph = json.loads(text)
    if not isinstance(graph, dict):
        return None
    nodes = {str(k): v for k, v in graph.items() if isinstance(v, dict)}
    samplers = [n for n in nodes.values() if n.get("class_type") in SAMPLER_NODES]
    if not samplers:
        return None
    inputs = samplers[0].get("inputs") or {}
    settings: dict[str, Any] = {}
    for key, kind, names in (
        ("seed", int, ("seed", "noise_seed")),
        ("steps", int, ("steps",)),
        ("guidance", float, ("cfg",)),
        ("strength", float, ("denoise",)),
    ):
        for name in names:
            _put(settings, key, _literal(inputs.get(name)), kind)
    sampler = _literal(inputs.get("sampler_name"))
    if isinstance(sampler, str):
        name = COMFY_SAMPLERS.get(sampler, sampler)
        if sampler == "dpmpp_2m" and _literal(inputs.get("scheduler")) == "karras":
            name = "DPM++ 2M Karras"
        settings["scheduler"] = name
    for key, name in (("prompt", "positive"), ("negative_prompt", "negative")):
        found = _find(nodes, inputs.get(name), ("text", "text_g", "prompt"))
        if isinstance(found, str) and found:
            settings[key] = found
    model = _find(nodes, inputs.get("model"), ("ckpt_name", "unet_name", "model_name"))
    if isinstance(model, str) and model:
        settings["model"] = model
    latent = _node(nodes, inputs.get("latent_image"))
    for _ in range(MAX_DEPTH):
        if latent is None:
            break
        latent_inputs = latent.get("inputs") or {}
        if "width" in latent_inputs and "height" in latent_inputs:
            _put(settings, "width", _literal(latent_inputs["width"]), int)
            _put(settings, "height", _literal(latent_inputs["height"]), int)
            break
        latent = _node(nodes, next(iter(_links(latent_inputs)), None))
    return Provenance("ComfyUI", settings)


def _find(nodes: dict[str, Any], link: Any, names: tuple[str, ...]) -> Any:
    """Follow ``link`` (breadth first through linked inputs) to the first node with a literal
    value under one of ``names``."""
    queue, seen = [link], set()
    for _ in range(MAX_DEPTH * 4):
        if not queue:
            return None
        node = _node(nodes, queue.pop(0))
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        inputs = node.get("inputs") or {}
        for name in names:
            value = _literal(inputs.get(name))
            if isinstance(value, str) and value:
                return value
        queue.extend(_links(inputs))
    return None


def _node(nodes: dict[str, Any], link: Any) -> dict[str, Any] | None:
    if isinstance(link, list) and link and isinstance(link[0], (str, int)):
        node = nodes.get(str(link[0]))
        return node if isinstance(node, dict) else None
    return None


def _links(inputs: Any) -> list[Any]:
    if not isinstance(inputs, dict):
        return []
    return [v for v in inputs.values() if isinstance(v, list) and len(v) == 2]


def _literal(value: Any) -> Any:
    return None if isinstance(value, (list, dict)) else value


def _put(settings: dict[str, Any], key: str, value: Any, kind: type) -> None:
    if value is None or isinstance(value, bool) or key in settings:
        return
    try:
        number = kind(float(value)) if kind is int else kind(value)
    except (TypeError, ValueError, OverflowError):
        return
    if number == number and abs(number) < 2**63:  # no NaN, nothing absurd
        settings[key] = number


def _put_size(settings: dict[str, Any], size: Any) -> None:
    if isinstance(size, str) and "x" in size:
        width, _, height = size.partition("x")
        _put(settings, "width", width.strip(), int)
        _put(settings, "height", height.strip(), int)
