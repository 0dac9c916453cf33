"""The Stable Diffusion engine (``engine.DiffusersEngine``): pipelines and their cache, devices
and precision, schedulers, prompts, LoRAs and embeddings, previews and decoding. torch and
diffusers load inside functions, never when a module here is imported."""
