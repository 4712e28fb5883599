"""clip-inversion: see what a CLIP model has learned by inverting prompts into images.

Importing the package loads nothing heavy, so ``clip-inversion --help`` answers at once; the bundled toy models
register with the loader when :mod:`clip_inversion.core.clip` is imported.
"""
