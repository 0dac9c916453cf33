"""The AUTOMATIC1111 "parameters" text: how a picture was made, readable by other tools.

Layout, as AUTOMATIC1111 writes it::

    <prompt, possibly several lines>
    Negative prompt: <negative prompt, possibly several lines>
    Steps: 20, Sampler: Euler a, CFG scale: 7.0, Seed: 1234, Size: 512x512, ...

The "Negative prompt" line is left out when there is none. Setting values that contain a comma,
colon, quote or newline are written as JSON strings. Each control is one setting, as the
AUTOMATIC1111 ControlNet extension writes it::

    ControlNet 0: "Module: scribble, Model: control_v11p_sd15_scribble, Weight: 1.0, ..."

``parse_control`` reads such a value back.
"""

from __future__ import annotations

import json
import re

from sdstudio import __version__
from sdstudio.core.request import Control, GenerationRequest, Mode

PROMPT = "Prompt"
NEGATIVE_PROMPT = "Negative prompt"
_NEGATIVE_PREFIX = "Negative prompt:"

# AUTOMATIC1111's own pattern for one "Key: value" of the settings line (infotext_utils.py).
_SETTING = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')


def quote(value: object) -> str:
    """A setting value as written on the settings line: JSON-quoted if it would break the line."""
    text = str(value)
    if any(ch in text for ch in ',:"\n'):
        return json.dumps(text, ensure_ascii=False)
    return text


def unquote(text: str) -> str:
    """Inverse of ``quote``; text that is not a valid JSON string is returned as is."""
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        try:
            value = json.loads(text)
        except ValueError:
            return text
        if isinstance(value, str):
            return value
    return text


def format_parameters(
    request: GenerationRequest, *, width: int, height: int, model_name: str = ""
) -> str:
    """The "parameters" text for a picture made from ``request`` at ``width`` x ``height``."""
    settings: list[tuple[str, object]] = [
        ("Steps", request.steps),
        ("Sampler", request.scheduler.value),
        ("CFG scale", float(request.guidance)),
        ("Seed", request.seed),
        ("Size", f"{width}x{height}"),
    ]
    if model_name:
        settings.append(("Model", model_name))
    if request.mode is not Mode.TXT2IMG:
        settings.append(("Denoising strength", float(request.strength)))
    if request.mode in (Mode.INPAINT, Mode.REMOVE):
        settings.append(("Mask blur", request.mask_blur))
    for index, control in enumerate(request.controls):
        settings.append((f"ControlNet {index}", format_control(control)))
    settings.append(("Version", f"sdstudio {__version__}"))
    line = ", ".join(f"{key}: {quote(value)}" for key, value in settings)
    negative = f"\n{_NEGATIVE_PREFIX} {request.negative_prompt}" if request.negative_prompt else ""
    return f"{request.prompt}{negative}\n{line}".strip()


def format_control(control: Control) -> str:
    """One control as the AUTOMATIC1111 ControlNet extension writes it (before quoting)."""
    name = control.model.strip().rstrip("/\\").replace("\\", "/").split("/")[-1]
    name = name.removesuffix(".safetensors")
    return ", ".join(
        f"{key}: {value}"
        for key, value in (
            ("Module", control.kind.value),
            ("Model", name.replace(",", " ").replace(":", " ")),
            ("Weight", float(control.strength)),
            ("Guidance Start", float(control.start)),
            ("Guidance End", float(control.end)),
        )
    )


def parse_control(value: str) -> dict[str, str]:
    """A ``ControlNet N`` setting's value -> its "Module", "Model", "Weight", ... as strings."""
    pairs = (part.partition(":") for part in value.split(","))
    return {key.strip(): text.strip() for key, sep, text in pairs if sep and key.strip()}


def format_fill_parameters(
    request: GenerationRequest, *, width: int, height: int, method: str
) -> str:
    """The "parameters" text for a model-free fill: the method stands where the sampler would;
    no steps, seed or guidance, since none were used."""
    settings = [
        ("Sampler", method),
        ("Size", f"{width}x{height}"),
        ("Mask blur", request.mask_blur),
        ("Version", f"sdstudio {__version__}"),
    ]
    return ", ".join(f"{key}: {quote(value)}" for key, value in settings)


def parse_parameters(text: str) -> dict[str, str]:
    """Split a "parameters" text into "Prompt", "Negative prompt" and each setting's value.

    Both prompts are always present ("" when missing). Quoted values are unquoted; all values
    stay strings (``"Size"`` is e.g. ``"512x768"``).
    """
    lines = text.replace("\r\n", "\n").strip().split("\n")
    settings: list[tuple[str, str]] = []
    if len(_SETTING.findall(lines[-1])) >= 3:  # as AUTOMATIC1111 decides it is the settings line
        settings = _SETTING.findall(lines.pop())
    prompt: list[str] = []
    negative: list[str] | None = None
    for line in lines:
        if negative is None and line.startswith(_NEGATIVE_PREFIX):
            negative = [line[len(_NEGATIVE_PREFIX) :].removeprefix(" ")]
        elif negative is not None:
            negative.append(line)
        else:
            prompt.append(line)
    result = {PROMPT: "\n".join(prompt), NEGATIVE_PROMPT: "\n".join(negative or [])}
    for key, value in settings:
        result[key.strip()] = unquote(value.strip())
    return result
