"""The two models of a family world: each one's image tower, open_clip config and training seed, from the seed.

A world's subject (the model inverted) and judge (the model that scores inversions) never share an image tower: one
is a ViT and the other a ResNet (timm's ``test_resnet``), which is which drawn from the world's seed, each with the
text tower of worlds A and B and its own training seed. The ViT sees a 4 x 4 grid of patches (patch 8 at the
family's 32 px) with fixed 2-D sine-cosine position embeddings, width 48 or 64 and 3 or 4 layers. Narrower ranges
than a ViT could take: a patch-16 ViT at 64 px read 88% of its world's fresh renders after 4,000 steps (283 s), and
two ViTs, or a ViT of width 96-128, do not fit the 6 minutes a world may take on this project's CPU
(docs/toy-models.md).
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass

import open_clip

TEXT_CFG = {"context_length": 16, "vocab_size": 49408, "width": 48, "heads": 4, "layers": 3}
EMBED_DIM = 64
VIT_WIDTHS: tuple[int, ...] = (48, 64)
VIT_LAYERS: tuple[int, ...] = (3, 4)
VIT_GRID = 4  # patches a side


@dataclass(frozen=True)
class Tower:
    """One model of a world.

    Args:
        kind: ``vit`` or ``resnet``.
        image_size: the world's image side in pixels.
        patch: a ViT's patch side (``image_size / 4``: 8 at 32 px); 0 for a ResNet.
        width: a ViT's width (48 or 64); 0 for a ResNet.
        layers: a ViT's transformer layers; 0 for a ResNet.
        seed: its training seed (``seed_everything`` and the training stream's seed).
    """

    kind: str
    image_size: int
    patch: int = 0
    width: int = 0
    layers: int = 0
    seed: int = 0

    def model_cfg(self) -> dict:
        """The open_clip model config (``embed_dim``, ``vision_cfg``, ``text_cfg``)."""
        if self.kind == "resnet":
            vision = {"timm_model_name": "test_resnet", "timm_model_pretrained": False, "timm_pool": "avg"}
            vision |= {"timm_proj": "linear", "image_size": self.image_size}
        else:
            head_width = 16 if self.width % 32 else 32
            vision = {"image_size": self.image_size, "patch_size": self.patch, "layers": self.layers}
            vision |= {"width": self.width, "head_width": head_width, "mlp_ratio": 2.0, "pool_type": "avg"}
            vision |= {"pos_embed_type": "sin_cos_2d"}  # fixed: a tiny ViT learns shapes sooner than with learnt ones
        return {"embed_dim": EMBED_DIM, "vision_cfg": vision, "text_cfg": dict(TEXT_CFG)}

    def label(self) -> str:
        """``ViT-8/64x4`` (patch/width x layers) or ``ResNet``."""
        return "ResNet" if self.kind == "resnet" else f"ViT-{self.patch}/{self.width}x{self.layers}"

    def register(self, name: str) -> str:
        """Make ``name`` an open_clip model name for this tower's config (for ``open_clip.create_model``)."""
        open_clip.factory._MODEL_CONFIGS[name] = self.model_cfg()  # what add_model_config does with a file
        return name

    def describe(self) -> dict:
        return {**asdict(self), "label": self.label()}


def draw_towers(seed: int, image_size: int) -> tuple[Tower, Tower]:
    """The subject and the judge of world ``seed``: a ViT and a ResNet, in an order drawn from the seed.

    Args:
        seed: the world's seed.
        image_size: the world's image side in pixels (the ViT's patch is a quarter of it).

    Returns:
        ``(subject, judge)``, with training seeds ``1000 + 2 * seed`` and ``1001 + 2 * seed`` (away from the
        shipped models' seeds 0-5).
    """
    rng = random.Random(f"clip-inversion family towers {seed}")
    vit_first = rng.random() < 0.5
    patch, width, layers = image_size // VIT_GRID, rng.choice(VIT_WIDTHS), rng.choice(VIT_LAYERS)
    seeds = (1000 + 2 * seed, 1001 + 2 * seed)
    vit = Tower("vit", image_size, patch, width, layers, seeds[0 if vit_first else 1])
    resnet = Tower("resnet", image_size, seed=seeds[1 if vit_first else 0])
    return (vit, resnet) if vit_first else (resnet, vit)
