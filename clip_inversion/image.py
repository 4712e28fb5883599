"""Image parameterisations: modules whose output is the batch of images being optimised."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MAX_SIZE = 2048  # larger images are almost surely a typo: 2048 px ViT-B/16 copies need tens of GiB


class PixelImage(nn.Module):
    """Raw pixels, the reference parameterisation: one ``3 x size x size`` image a prompt.

    Each image starts uniform-random from its own seed, so a prompt's start does not depend on the
    batch it runs in.

    Args:
        seeds: one seed a prompt; ``len(seeds)`` is the number of images ``P``.
        size: side in pixels.
    """

    def __init__(self, seeds: list[int], size: int) -> None:
        super().__init__()
        start = [torch.rand(3, size, size, generator=torch.Generator().manual_seed(s)) for s in seeds]
        self.pixels = nn.Parameter(torch.stack(start) if start else torch.empty(0, 3, size, size))

    @property
    def size(self) -> int:
        return self.pixels.shape[-1]

    def forward(self) -> Tensor:
        """Returns the ``(P, 3, H, W)`` images in [0, 1]."""
        return self.pixels

    @torch.no_grad()
    def upsample(self, size: int) -> None:
        """Replace the pixels by a bicubic upsampling to ``size``, as a new parameter (optimizers must be rebuilt)."""
        grown = F.interpolate(self.pixels, size=(size, size), mode="bicubic", align_corners=False)
        self.pixels = nn.Parameter(grown.clamp_(0, 1))

    @torch.no_grad()
    def project_(self) -> None:
        """Clamp to [0, 1], as the reference does after every optimizer step."""
        self.pixels.clamp_(0, 1)

    def resize_for(self, shape: torch.Size) -> None:
        """Take an empty parameter of ``shape`` so that a checkpoint's pixels can load into it."""
        self.pixels = nn.Parameter(self.pixels.new_empty(shape))
