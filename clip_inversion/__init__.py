"""clip-inversion: see what a CLIP model has learned by inverting prompts into images."""

from clip_inversion import toyworld  # noqa: F401 (registers the bundled toy models with the loader)
