"""SD Studio: a desktop image editor for generative inpainting."""

__version__ = "0.1.0"
