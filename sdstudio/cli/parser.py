"""The command line's arguments: ``build_parser`` and the options the commands share."""

from __future__ import annotations

import argparse
from pathlib import Path

from sdstudio import __version__
from sdstudio.cli.select import add_select_parser
from sdstudio.cli.upscale import add_upscale_parser
from sdstudio.core.request import ControlKind, Scheduler

FILL_METHODS = (
    "auto",
    "lama",
    "structure-texture",
    "patchmatch",
    "harmonic",
    "telea",
    "navier-stokes",
)
"""sdstudio.engine.fill.METHODS, named here so that building the parser stays cheap."""


def _add_generation_options(parser: argparse.ArgumentParser, *, strength: float | None) -> None:
    parser.add_argument("--prompt", required=True, help="what should be there")
    parser.add_argument("--negative", default="", help="what should not be there")
    parser.add_argument(
        "--model",
        default=None,
        help="hub id (owner/name) or local diffusers folder; default: $SDSTUDIO_MODEL or a "
        "Stable Diffusion 1.5 model",
    )
    parser.add_argument("--steps", type=int, default=20, help="denoising steps (default 20)")
    parser.add_argument("--guidance", type=float, default=7.0, help="CFG scale (default 7)")
    if strength is not None:
        parser.add_argument(
            "--strength",
            type=float,
            default=strength,
            help=f"how much to change, 0-1 (default {strength})",
        )
    parser.add_argument("--seed", type=int, default=None, help="seed (default: random)")
    parser.add_argument(
        "--scheduler",
        default="euler_a",
        help="sampler: " + ", ".join(s.name.lower() for s in Scheduler) + " (default euler_a)",
    )
    parser.add_argument("--previews", type=Path, help="write one preview PNG per step here")
    _add_control_options(parser)
    parser.add_argument(
        "--models-dir",
        type=Path,
        help="models folder: <lora:name:w> tags find LoRAs in its 'loras' folder, embeddings in "
        "its 'embeddings' folder (default: SD Studio's models folder)",
    )


def _add_control_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--controlnet", metavar="REF", help="ControlNet (hub id, folder or .safetensors file)"
    )
    parser.add_argument(
        "--control",
        type=Path,
        metavar="IMAGE",
        help="control image for --controlnet, used as it is (a scribble: light lines on dark), "
        "laid over the picture at its size",
    )
    parser.add_argument(
        "--control-kind",
        choices=[k.value for k in ControlKind],
        default=ControlKind.SCRIBBLE.value,
        help="canny: use the edges of IMAGE; inpaint (inpaint only): IMAGE with the mask marked "
        "on it; the others use IMAGE as it is (default scribble)",
    )
    for name, default, what in (
        ("strength", 1.0, "how strongly the control steers, 0-2"),
        ("start", 0.0, "fraction of the steps where the control starts"),
        ("end", 1.0, "fraction of the steps where it ends"),
    ):
        parser.add_argument(
            f"--control-{name}", type=float, metavar="F", help=f"{what} (default {default:g})"
        )


def _add_inpaint_area_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mask", required=True, type=Path, help="white (or opaque) = repaint")
    parser.add_argument("--mask-blur", type=int, default=4, help="soft edge in pixels (default 4)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sdstudio",
        description="SD Studio: inpainting, img2img and text-to-image with Stable Diffusion. "
        "'sdstudio' alone opens the editor; 'sdstudio PICTURE' opens it on a picture.",
    )
    parser.add_argument("--version", action="version", version=f"sdstudio {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details and tracebacks")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = commands.add_parser("inpaint", help="repaint the masked part of an image")
    p.add_argument("image", type=Path)
    _add_inpaint_area_options(p)
    _add_generation_options(p, strength=1.0)
    p.add_argument("--padding", type=int, default=32, help="context around the mask (default 32)")
    p.add_argument("--no-color-match", action="store_true", help="skip colour matching")
    p.add_argument("-o", "--output", required=True, type=Path)

    p = commands.add_parser("img2img", help="redraw a whole image guided by a prompt")
    p.add_argument("image", type=Path)
    _add_generation_options(p, strength=0.75)
    p.add_argument("-o", "--output", required=True, type=Path)

    p = commands.add_parser("txt2img", help="make an image from a prompt")
    _add_generation_options(p, strength=None)
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--height", type=int, default=512)
    p.add_argument("-o", "--output", required=True, type=Path)

    p = commands.add_parser("remove", help="remove what the mask covers (no model needed)")
    p.add_argument("image", type=Path)
    _add_inpaint_area_options(p)
    p.add_argument(
        "--fill",
        choices=FILL_METHODS,
        default="auto",
        help="fill: auto (default: LaMa for object-sized holes when a LaMa model is installed, "
        "else structure-texture; harmonic for thin holes), lama (the LaMa removal model), "
        "structure-texture (smooth shading + copied texture), patchmatch (copied texture and "
        "shading: better beside other objects), harmonic (smooth), telea or navier-stokes (OpenCV)",
    )
    p.add_argument(
        "--fill-model",
        type=Path,
        metavar="FILE",
        help="LaMa model file for --fill lama or auto (default: the one installed in the models "
        "folder's 'specialists' folder, from Models > Model library)",
    )
    p.add_argument(
        "--refine",
        action="store_true",
        help="after the fill, let a model denoise the area partially with a neutral prompt",
    )
    p.add_argument("--model", default=None, help="model for --refine (default: SD 1.5 inpainting)")
    p.add_argument("--strength", type=float, default=0.5, help="--refine strength (default 0.5)")
    p.add_argument("--steps", type=int, default=20, help="--refine steps (default 20)")
    p.add_argument("--seed", type=int, default=None, help="--refine seed (default: random)")
    p.add_argument("--models-dir", type=Path, help=argparse.SUPPRESS)
    p.add_argument("-o", "--output", required=True, type=Path)

    p = commands.add_parser(
        "restore",
        help="repair scratches, dust and creases (no model needed), and restore faces (--faces)",
    )
    p.add_argument("image", type=Path)
    p.add_argument("-o", "--output", required=True, type=Path)
    p.add_argument(
        "--mask", type=Path, help="damage to repair (white = damaged) instead of detecting"
    )
    p.add_argument("--mask-out", type=Path, help="write the proposed damage mask here (to edit)")
    p.add_argument(
        "--sensitivity", type=float, default=0.5, help="damage detection, 0-1 (default 0.5)"
    )
    p.add_argument("--levels", action="store_true", help="stretch the tones (auto levels)")
    p.add_argument("--white-balance", action="store_true", help="correct a colour cast")
    p.add_argument("--denoise", type=float, metavar="STRENGTH", help="denoise, 0-1 (e.g. 0.3)")
    p.add_argument(
        "--model",
        default=None,
        help="redraw large losses (tears, lost corners) with this inpainting model after the "
        "model-free repair; thin damage never needs one",
    )
    p.add_argument(
        "--strength", type=float, default=None, help="how much the model may change, 0-1 (0.6)"
    )
    p.add_argument("--steps", type=int, default=20, help="model steps (default 20)")
    p.add_argument("--seed", type=int, default=None, help="model seed (default: random)")
    p.add_argument(
        "--no-repair",
        action="store_true",
        help="skip damage detection and repair (for --faces or the fixes alone)",
    )
    p.add_argument(
        "--faces",
        action="store_true",
        help="restore the faces found, last (a GFPGAN or RestoreFormer model, from Models > "
        "Model library or --face-model)",
    )
    p.add_argument(
        "--face-model",
        metavar="REF",
        help="face restoration model: a file, or the name of one in the models folder's "
        "'specialists' folder (default: the one installed there, GFPGAN first)",
    )
    p.add_argument(
        "--face-strength",
        type=float,
        metavar="F",
        help="how much of the restored face to blend over the original, 0-1 (default 0.8; "
        "lower keeps more of the original: fidelity)",
    )
    p.add_argument("--models-dir", type=Path, help=argparse.SUPPRESS)

    add_select_parser(commands)
    add_upscale_parser(commands)

    p = commands.add_parser(
        "info",
        help="print how an image was made: AUTOMATIC1111/SD Studio parameters, ComfyUI or InvokeAI",
    )
    p.add_argument("image", type=Path)
    return parser
