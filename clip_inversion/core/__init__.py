"""The inversion in plain torch: load a CLIP, encode targets, parameterise the image, augment, score, step.

Nothing here imports Lightning or the toy world; every piece works and is tested without a Trainer.
"""
