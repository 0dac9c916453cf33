"""One editing session: the document, the generation workers and the candidates they return.

It decides the mode from the document (mask -> inpaint, region -> img2img, untouched blank
canvas -> txt2img, else img2img of the picture), builds frozen requests from the panel's
settings, forwards previews to the canvas, and keeps results as candidates until one is accepted
into the document as one undoable step, or discarded.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QImage

from sdstudio.core.document import Document
from sdstudio.core.errors import SDStudioError
from sdstudio.core.metadata import parse_parameters
from sdstudio.core.pixels import to_rgba8
from sdstudio.core.region import Box
from sdstudio.core.request import MAX_SEED, Control, GenerationRequest, Mode, random_seed
from sdstudio.core.sketch import area_view, flatten_sketch
from sdstudio.engine.events import Finished, Started
from sdstudio.qt.control_request import document_controls


@dataclass(eq=False)
class Candidate:
    result: Finished
    image: QImage
    """The patch for display (8-bit RGBA, owns its memory)."""

    @property
    def box(self) -> Box:
        return self.result.box

    @property
    def nbytes(self) -> int:
        return self.result.patch.nbytes + self.image.sizeInBytes()

    @property
    def label(self) -> str:
        request = self.result.request
        return "fill" if request.mode is Mode.REMOVE else f"seed {request.seed}"

    @property
    def seed(self) -> int:
        return self.result.request.seed


def qimage_of(array: np.ndarray) -> QImage:
    rgba = np.ascontiguousarray(to_rgba8(array))
    height, width = rgba.shape[:2]
    return QImage(rgba.data, width, height, width * 4, QImage.Format.Format_RGBA8888).copy()


def made_by(result: Finished) -> str:
    """How a result was made, for the status bar: its seed, or for a model-free fill the method
    that really ran (its parameters say so; it may differ from the one asked for)."""
    settings = parse_parameters(result.parameters)
    if "Seed" in settings or "Sampler" not in settings:
        return f"seed {result.request.seed}"
    return settings["Sampler"]


REFINE_STRENGTH = 0.5
"""The most a model refine of a removal may change the pre-filled area."""


def _fields(mode: Mode, s: dict) -> dict:
    """A request's fields from the panel's settings ``s``."""
    return {
        "mode": mode,
        "prompt": s["prompt"],
        "negative_prompt": s["negative_prompt"],
        "model": s["model"],
        "steps": s["steps"],
        "guidance": s["guidance"],
        "strength": s["strength"],
        "scheduler": s["scheduler"],
        "loras": s.get("loras", ()),  # a sampler preset's LoRA
        "padding": s["padding"],
        "mask_blur": s["mask_blur"],
    }


def decide_mode(document: Document, blank: bool) -> Mode:
    if document.has_mask:
        return Mode.INPAINT
    if document.region is not None:
        return Mode.IMG2IMG
    if blank and not document.modified:
        return Mode.TXT2IMG
    return Mode.IMG2IMG


def snap8(value: int) -> int:
    return max(64, min(4096, value // 8 * 8))


class EditorSession(QObject):
    status = Signal(str)  # a message for the status bar
    accepted = Signal()  # a result went into the document (a moment worth an autosave)
    failed = Signal(str)  # a generation failed: say why and what to do
    progress = Signal(int, int, float)  # step, total, seconds left (-1: unknown)
    running_changed = Signal(bool)
    candidates_changed = Signal()
    last_seed_changed = Signal(object)  # seeds reach 2**32 - 1, past a C int

    def __init__(self, canvas, panel, generation_worker, fill_worker) -> None:
        super().__init__()
        self.canvas, self.panel = canvas, panel
        self.workers = (generation_worker, fill_worker)
        self.document: Document | None = None
        self.blank = False
        self.candidates: list[Candidate] = []
        self.current = -1
        self.running = False
        self.parameters: str | None = None  # of the last accepted result, for export
        self.candidate_budget = 1024 * 2**20
        """Bytes the waiting results may take; beyond it the oldest are dropped (said so)."""
        self._step_times: list[float] = []
        for worker in self.workers:
            worker.started.connect(self._on_started)
            worker.step.connect(self._on_step)
            worker.preview.connect(self._on_preview)
            worker.finished.connect(self._on_finished)
            worker.cancelled.connect(self._on_cancelled)
            worker.failed.connect(self._on_failed)
            worker.batch_done.connect(self._on_batch_done)

    # -- document -----------------------------------------------------------------------------

    def set_document(self, document: Document | None, blank: bool = False) -> None:
        self.cancel()
        self.document, self.blank = document, blank
        self.discard_all()
        self.canvas.set_document(document)

    def mode(self) -> Mode | None:
        return None if self.document is None else decide_mode(self.document, self.blank)

    # -- generation ---------------------------------------------------------------------------

    def requests(self, mode: Mode, **overrides) -> list[GenerationRequest]:
        """Frozen requests for the panel's settings (``overrides`` win), one per image of the
        batch."""
        document = self.document
        assert document is not None
        s = self.panel.settings()
        seed = s["seed"] if s["seed"] is not None else random_seed()
        fields = _fields(mode, s)
        if mode is Mode.REMOVE:  # a refine must not invent: keep most of the pre-fill
            fields["strength"] = min(fields["strength"], REFINE_STRENGTH)
        elif "controls" not in overrides:
            fields["controls"] = self.controls()
        fields.update(overrides)
        if mode is Mode.TXT2IMG:
            fields.update(width=snap8(document.width), height=snap8(document.height))
        else:
            fields["image"] = document.image
            if mode is Mode.IMG2IMG and document.sketch is not None and document.sketch_visible:
                # sketch-to-image: the strokes are part of the picture the model redraws (an
                # inpaint keeps the picture: its unmasked pixels come back as they were)
                fields["image"] = flatten_sketch(document)
            fields["mask"] = document.mask if mode in (Mode.INPAINT, Mode.REMOVE) else None
            fields["region"] = document.region if mode is Mode.IMG2IMG else None
        first = GenerationRequest(seed=seed, **fields)
        return [first] + [
            first.with_(seed=(seed + k) % (MAX_SEED + 1)) for k in range(1, s["batch_count"])
        ]

    def area_request(
        self, area: Box, max_side: int | None = None, **overrides
    ) -> GenerationRequest:
        """One img2img request of ``area`` alone, as live mode's frames are: the picture there
        with the shown sketch on it, the control cropped alike, the panel's settings
        (``overrides`` win); scaled down to ``max_side`` when larger. It copies only that part
        of the picture; its result covers the request's image, not the picture's pixels."""
        document = self.document
        assert document is not None
        view = area_view(document, area, max_side)
        s = self.panel.settings()
        fields = _fields(Mode.IMG2IMG, s)
        image = flatten_sketch(view) if view.sketch is not None and view.sketch_visible else None
        fields.update(
            image=view.image if image is None else image,
            controls=document_controls(view, s.get("control")),
            seed=s["seed"] or 0,
        )
        fields.update(overrides)
        return GenerationRequest(**fields)

    def add_result(self, result: Finished) -> None:
        """Put a result among the candidates (live mode's Shift+Enter), as a run's would be."""
        self._on_finished(result)

    def controls(self, box: Box | None = None) -> tuple[Control, ...]:
        """The panel's control for the document (``box``: that part of it; None: the whole
        picture, which the engine crops like the picture); () when Control is off.
        RequestError (one line) when no ControlNet is chosen or the sketch it needs is empty."""
        assert self.document is not None
        return document_controls(self.document, self.panel.settings().get("control"), box)

    def generate(self) -> None:
        self._run(self.workers[0], self.mode())

    def remove(self, refine: bool = False) -> None:
        """Fill what the mask covers from its surroundings (no model); with ``refine``, the
        model then denoises the pre-filled area partially, with a neutral prompt."""
        if self.document is not None and not self.document.has_mask:
            self.status.emit("Nothing to remove: erase the object with the eraser (E) first.")
            return
        self._run(self.workers[0 if refine else 1], Mode.REMOVE)

    def redraw_losses(self) -> None:
        """Redraw the masked large losses of an old photo with the panel's model: the restore
        prompt, starting from the model-free repair, keeping a black-and-white photo's tone."""
        from sdstudio.engine.restore import RESTORE_NEGATIVE, RESTORE_PROMPT, RESTORE_STRENGTH

        if self.document is not None and not self.document.has_mask:
            self.status.emit("No large losses are masked: nothing for the model to redraw.")
            return
        overrides = {
            "prompt": RESTORE_PROMPT,
            "negative_prompt": RESTORE_NEGATIVE,
            "strength": RESTORE_STRENGTH,
            "keep_tone": True,
        }
        self._run(self.workers[0], Mode.REMOVE, **overrides)

    def _run(self, worker, mode: Mode | None, **overrides) -> None:
        if self.document is None or mode is None:
            self.status.emit("Open or paste a picture first (Ctrl+O, Ctrl+V), or make a new one.")
            return
        if self.running:
            self.status.emit("Already generating: wait, or cancel with Esc.")
            return
        try:
            requests = self.requests(mode, **overrides)
        except SDStudioError as error:
            self.status.emit(str(error))
            return
        self._set_running(True)
        self.last_seed_changed.emit(requests[0].seed)
        if worker is self.workers[0]:
            self.status.emit(
                f"Starting {mode.value} with {requests[0].model} (the first run loads the model; "
                "this takes a while) …"
            )
        worker.submit(requests)

    def cancel(self) -> None:
        if self.running:
            for worker in self.workers:
                worker.cancel()

    def _set_running(self, running: bool) -> None:
        if running != self.running:
            self.running = running
            self.running_changed.emit(running)

    # -- worker events (GUI thread) -----------------------------------------------------------

    def _on_started(self, event: Started) -> None:
        self._step_times = [time.perf_counter()]
        self.status.emit(f"{event.mode.value}: working on {event.box} ...")
        self.progress.emit(0, event.total_steps, -1.0)

    def _on_step(self, index: int, total: int) -> None:
        now = time.perf_counter()
        self._step_times.append(now)
        per_step = (now - self._step_times[0]) / max(1, len(self._step_times) - 1)
        self.progress.emit(index, total, per_step * (total - index))

    def _on_preview(self, image: QImage, box: Box) -> None:
        self.canvas.set_preview(image, box)

    def _on_finished(self, result: Finished) -> None:
        self.canvas.set_preview(None)
        self.candidates.append(Candidate(result, qimage_of(result.patch)))
        dropped = 0
        while len(self.candidates) > 1 and self.candidates_bytes() > self.candidate_budget:
            del self.candidates[0]  # the oldest result goes first
            dropped += 1
        self.select(len(self.candidates) - 1)
        message = (
            f"Result {len(self.candidates)} ({made_by(result)}): Enter accepts, "
            "Left/Right steps through results, Backspace discards."
        )
        if dropped:
            budget = self.candidate_budget // 2**20
            message += (
                f" The oldest {dropped} result(s) were dropped to keep the results within "
                f"{budget} MiB (memory/results_mib in the settings)."
            )
        if result.notes:  # e.g. the fast path fell back to the plain one
            message += " " + " ".join(result.notes)
        self.status.emit(message)

    def kept_results(self) -> list[tuple[np.ndarray, int, int, dict]]:
        """The waiting results as a project keeps them: pixels, place, and how they were made."""
        kept = []
        for candidate in self.candidates:
            request = candidate.result.request
            info = {
                "parameters": candidate.result.parameters,
                "mode": request.mode.value,
                "seed": request.seed,
                "prompt": request.prompt,
                "negative_prompt": request.negative_prompt,
                "model": request.model,
            }
            kept.append((candidate.result.patch, candidate.box.x0, candidate.box.y0, info))
        return kept

    def restore_results(self, results) -> int:
        """Waiting results read back from a project (``core.project.Result``), back in the
        strip with the first shown, as after generating. Returns how many were restored."""
        restored = 0
        for result in results:
            info = result.info
            try:
                mode = Mode(info.get("mode", Mode.INPAINT.value))
                stand_in = {}  # the request is a record now: a 1-pixel picture satisfies it
                if mode is not Mode.TXT2IMG:
                    stand_in = {
                        "image": np.zeros((1, 1), np.uint8),
                        "mask": np.full((1, 1), 255, np.uint8),
                    }
                request = GenerationRequest(
                    mode=mode,
                    seed=int(info.get("seed", 0)),
                    prompt=str(info.get("prompt", "")),
                    negative_prompt=str(info.get("negative_prompt", "")),
                    model=str(info.get("model", "")),
                    **stand_in,
                )
            except (SDStudioError, ValueError, TypeError):
                continue  # settings from a newer or damaged file: that result is left out
            height, width = result.patch.shape[:2]
            box = Box(result.x, result.y, result.x + width, result.y + height)
            finished = Finished(result.patch, box, str(info.get("parameters", "")), request)
            self.candidates.append(Candidate(finished, qimage_of(result.patch)))
            restored += 1
        self.select(0 if self.candidates else -1)
        return restored

    def candidates_bytes(self) -> int:
        return sum(candidate.nbytes for candidate in self.candidates)

    def _on_cancelled(self) -> None:
        self.canvas.set_preview(None)
        self.status.emit("Cancelled; the picture is unchanged.")

    def _on_failed(self, message: str) -> None:
        self.canvas.set_preview(None)
        self.failed.emit(message)

    def _on_batch_done(self) -> None:
        self._set_running(False)
        self.progress.emit(0, 0, -1.0)

    # -- candidates ---------------------------------------------------------------------------

    def select(self, index: int) -> None:
        if not self.candidates:
            self.current = -1
            self.canvas.set_candidate(None)
        else:
            self.current = max(0, min(index, len(self.candidates) - 1))
            candidate = self.candidates[self.current]
            self.canvas.set_candidate(candidate.image, candidate.box)
        self.candidates_changed.emit()

    def step_candidate(self, delta: int) -> None:
        if self.candidates:
            self.select((self.current + delta) % len(self.candidates))

    def accept(self) -> bool:
        """Put the shown candidate into the document (one undo step); drop the others."""
        if self.document is None or self.current < 0:
            return False
        candidate = self.candidates[self.current]
        clear = candidate.result.request.mode in (Mode.INPAINT, Mode.REMOVE)
        self.document.apply_patch(
            candidate.box, candidate.result.patch, label="Accept result", clear_mask=clear
        )
        self.parameters = candidate.result.parameters
        self.blank = False
        self.discard_all()
        self.status.emit("Result accepted (Ctrl+Z undoes it).")
        self.accepted.emit()
        return True

    def discard(self) -> None:
        if self.current >= 0:
            del self.candidates[self.current]
            self.select(self.current)

    def discard_all(self) -> None:
        self.candidates.clear()
        self.select(-1)

    def shown_candidate(self) -> Candidate | None:
        return self.candidates[self.current] if self.current >= 0 else None
