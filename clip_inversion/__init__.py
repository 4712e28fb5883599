"""clip-inversion: see what a CLIP model has learned by inverting prompts into images.

Importing the package loads nothing heavy, so ``clip-inversion --help`` answers at once; the bundled toy models
register with the loader (an entry point of group ``clip_inversion.models``) when a model is first loaded.
"""
