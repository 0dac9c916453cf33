"""The Qt layer: widgets, the canvas, actions, dialogs and the generation worker thread.

PySide6 is imported only here (and in ``sdstudio.app``). Nothing in this package imports torch at
module import: the engine is created on the worker thread the first time it is needed.
"""
