"""The augmentation pipeline: ``copies`` randomly transformed views of every image, drawn independently.

The transforms are Kornia augmentations (or any module mapping ``(N, 3, H, W)`` to the same), named from
YAML by class path, for example::

    augmentations:
      - class_path: kornia.augmentation.RandomAffine
        init_args: {degrees: 30, translate: [0.1, 0.1], scale: [0.7, 1.2], p: 0.5, padding_mode: border}
      - class_path: clip_inversion.augment.RandomColorShift
        init_args: {shift: 0.1, p: 0.5}
"""

from __future__ import annotations

import kornia.augmentation as K
import torch
from torch import Tensor, nn

from clip_inversion.errors import UsageError


def reference_augmentations() -> list[nn.Module]:
    """The authors' pipeline: one random affine warp, applied to each copy with probability 0.5."""
    return [K.RandomAffine(degrees=30, translate=(0.1, 0.1), scale=(0.7, 1.2), p=0.5, padding_mode="border")]


class RandomColorShift(nn.Module):
    """Plug-In Inversion's colour shift ``x * exp(s) + m``, per image and channel.

    Args:
        shift: ``m ~ U(-shift, shift)`` and ``s ~ U(-shift, shift)``.
        p: probability of shifting each image.
    """

    def __init__(self, shift: float = 0.1, p: float = 1.0) -> None:
        super().__init__()
        self.shift, self.p = shift, p

    def forward(self, images: Tensor) -> Tensor:
        """``(N, 3, H, W) -> (N, 3, H, W)``; values may leave [0, 1], as in Plug-In Inversion."""
        n, c = images.shape[:2]
        draw = torch.rand(3, n, c, 1, 1, device=images.device, dtype=images.dtype)
        mean, log_scale = (draw[:2] * 2 - 1) * self.shift
        applied = (draw[2, :, :1] < self.p).to(images.dtype)
        return images * (log_scale * applied).exp() + mean * applied


class Augment(nn.Module):
    """Makes ``copies`` augmented views of each image, every view with its own random draws.

    Args:
        transforms: applied in order; Kornia augmentations must keep ``same_on_batch=False`` (their default).
            ``None`` gives :func:`reference_augmentations`, ``[]`` plain copies.
        copies: views of each image.
    """

    def __init__(self, transforms: list[nn.Module] | None = None, copies: int = 13) -> None:
        super().__init__()
        if copies < 1:
            raise UsageError(f"--model.copies must be at least 1, got {copies}")
        self.transforms = nn.Sequential(*(reference_augmentations() if transforms is None else transforms))
        self.copies = copies

    def forward(self, images: Tensor, seeds: list[int] | None = None) -> Tensor:
        """``(P, 3, H, W) -> (P * copies, 3, H, W)``, the copies of image ``p`` at rows ``p * copies + c``.

        With ``seeds`` (one a prompt), each prompt's copies are drawn from the global RNG seeded with its own
        seed, so a prompt sees the same augmentations whatever batch it is in; without, one draw for all.
        """
        views = images.repeat_interleave(self.copies, dim=0)
        if seeds is None:
            return self.transforms(views)
        drawn = []
        for p, seed in enumerate(seeds):
            torch.manual_seed(seed)
            drawn.append(self.transforms(views[p * self.copies : (p + 1) * self.copies]))
        return torch.cat(drawn)
