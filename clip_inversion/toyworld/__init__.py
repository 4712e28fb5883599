"""The small CLIP world that ships with clip-inversion: synthetic captioned shapes and models trained on them."""

from pathlib import Path

import open_clip

MODEL_CONFIGS = Path(__file__).parent / "model_configs"
MODELS = Path(__file__).parent / "models"


def register_model_configs() -> None:
    """Make the toy architectures (``toy-resnet``, ``toy-byobnet``, ``toy-efficientnet``, ``toy-vit-w96``,
    ``toy-vit-w64``) known to ``open_clip``."""
    if "toy-resnet" not in open_clip.list_models():
        open_clip.add_model_config(MODEL_CONFIGS)
