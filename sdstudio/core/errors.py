"""Errors a person can act on.

Every message says what failed, why, and what to do. The CLI prints ``str(error)`` as one line;
the GUI shows it in the status bar or a dialog. Tracebacks go to the log, not to the person.
"""


class SDStudioError(Exception):
    """Base of every error whose message is meant for the person using the program."""


class ImageLoadError(SDStudioError):
    """An image could not be read (missing, unreadable, too large, unsupported)."""


class ImageSaveError(SDStudioError):
    """An image could not be written; the previous file, if any, is left intact."""


class ProjectError(SDStudioError):
    """A project file (.ora) could not be read or written; on a failed save the previous file
    is left intact."""


class MaskError(SDStudioError):
    """A mask is unusable (empty, wrong size)."""


class RequestError(SDStudioError):
    """A generation request has an invalid parameter."""


class ModelError(SDStudioError):
    """A model reference cannot be resolved or loaded (missing, offline, unsafe format)."""


class GenerationError(SDStudioError):
    """Generation ran but produced no usable result (out of memory, NaN or black output)."""


class Cancelled(SDStudioError):
    """The person cancelled a slow step; nothing was changed."""
