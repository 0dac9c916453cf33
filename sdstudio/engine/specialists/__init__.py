"""Single-purpose networks (LaMa removal, upscalers, face restoration, Segment Anything).

Nothing is imported here: importing the package must stay cheap (no torch, no spandrel)."""
