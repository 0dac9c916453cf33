"""Turns requests into pixels. No Qt here; torch and diffusers load lazily, inside functions.

Importing this package is cheap: ``DiffusersEngine`` pulls in torch only when it runs.
"""

from sdstudio.engine.classical import ClassicalFillEngine
from sdstudio.engine.events import (
    Cancelled,
    Engine,
    Event,
    Failed,
    Finished,
    Preview,
    Started,
    Step,
)
from sdstudio.engine.fake import FakeEngine

__all__ = [
    "Cancelled",
    "ClassicalFillEngine",
    "DiffusersEngine",
    "Engine",
    "Event",
    "FakeEngine",
    "Failed",
    "Finished",
    "Preview",
    "Started",
    "Step",
]


def __getattr__(name: str):
    if name == "DiffusersEngine":
        from sdstudio.engine.diffusion.engine import DiffusersEngine

        return DiffusersEngine
    raise AttributeError(name)
