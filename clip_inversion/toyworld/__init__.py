"""The small CLIP world that ships with clip-inversion: synthetic captioned shapes and models trained on them.

Importing it makes the toy architectures known to open_clip and registers every shipped model (a folder of
``models/``) with the loader under its folder's name.
"""

from pathlib import Path

import open_clip

from clip_inversion.core.clip import register_bundled

MODEL_CONFIGS = Path(__file__).parent / "model_configs"
MODELS = Path(__file__).parent / "models"

open_clip.add_model_config(MODEL_CONFIGS)  # toy-resnet, toy-byobnet, toy-efficientnet, ...
for folder in sorted(MODELS.iterdir()):
    if (folder / "open_clip_config.json").is_file():
        register_bundled(folder.name, folder)
