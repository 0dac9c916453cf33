"""Models: references and where they resolve to (``resolve``), diffusers folders and what is safe
in them (``folders``), single-file checkpoints (``checkpoints``), the model library
(``library``) and downloads (``downloads``). Import the module you need; this package imports
nothing, so that none of them loads another it does not use."""
