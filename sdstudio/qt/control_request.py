"""The panel's Control settings made into the request's controls for a document.

Scribble and line art take the Sketch layer (white strokes on black, whether it is shown or
hidden: hiding the sketch shows the picture while the sketch still steers); canny and tile take
the picture as shown (with the sketch over it while the sketch is shown); inpaint takes the
picture itself, as an inpaint keeps it (the engine marks the area to regenerate on it). The image covers the
whole picture unless a box is given; the engine crops it like the picture.
"""

from __future__ import annotations

from collections.abc import Mapping

from sdstudio.core.document import Document
from sdstudio.core.errors import RequestError
from sdstudio.core.pixels import to_rgb8
from sdstudio.core.region import Box
from sdstudio.core.request import Control, ControlKind
from sdstudio.core.sketch import flatten_sketch, sketch_control_image

NO_CONTROLNET = "Choose a ControlNet in the panel's Control section, or switch Control off."
EMPTY_SKETCH = "The Sketch layer is empty: draw with the brush (B) first, or switch Control off."
SKETCH_KINDS = (ControlKind.SCRIBBLE, ControlKind.LINEART)


def document_controls(
    document: Document, chosen: Mapping[str, object] | None, box: Box | None = None
) -> tuple[Control, ...]:
    """``chosen`` (the panel's ``settings()["control"]``: reference, kind, strength, start, end;
    None when Control is off) as controls for ``document`` (``box``: that part of it).
    RequestError (one line) when no ControlNet is chosen or the sketch the kind needs is empty."""
    if not chosen:
        return ()
    reference = chosen["reference"]
    if not isinstance(reference, str) or not reference.strip():
        raise RequestError(NO_CONTROLNET)
    kind = ControlKind(chosen["kind"])
    if kind in SKETCH_KINDS:
        image = sketch_control_image(document, box)
        if not image.any():
            raise RequestError(EMPTY_SKETCH)
    elif kind is ControlKind.INPAINT:  # the picture an inpaint keeps; the engine marks the hole
        image = to_rgb8(document.image if box is None else document.image[box.slices])
    elif document.sketch is not None and document.sketch_visible:
        image = to_rgb8(flatten_sketch(document, box))
    else:
        image = to_rgb8(document.image if box is None else document.image[box.slices])
    numbers = {key: chosen[key] for key in ("strength", "start", "end")}
    return (Control(reference.strip(), image, kind, **numbers),)  # type: ignore[arg-type]
