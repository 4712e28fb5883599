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
import torch.nn.functional as F
from kornia.geometry.conversions import normalize_homography
from torch import Tensor, nn

from clip_inversion.errors import UsageError


def seed_draws(seed: int, device: torch.device) -> None:
    """Seed the generators random augmentations draw from: the CPU's, and the images' GPU's.

    What ``torch.manual_seed`` does for these draws, without its cost (about 0.1 ms a call where accelerators
    are not initialised: it records a stack trace for each backend's lazy seeding).
    """
    torch.random.default_generator.manual_seed(seed)
    if device.type == "cuda":
        torch.cuda.manual_seed(seed)


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
            seed_draws(seed, images.device)
            drawn.append(self.transforms(views[p * self.copies : (p + 1) * self.copies]))
        return torch.cat(drawn)

    @property
    def fusable(self) -> bool:
        """Whether :meth:`warp_to` applies: the pipeline is a single ``RandomAffine`` drawn per copy."""
        return (
            len(self.transforms) == 1
            and type(self.transforms[0]) is K.RandomAffine
            and not self.transforms[0].same_on_batch
        )

    def warp_to(self, images: Tensor, size: tuple[int, int], seeds: list[int] | None = None) -> Tensor:
        """The copies, warped and resized to ``size`` in one sampling (only when :attr:`fusable`).

        Draws the same affine parameters as :meth:`forward` (per prompt from ``seeds``, or once for all),
        turns them into sampling grids at ``size`` and samples each image once with the affine's own
        interpolation (bilinear by default), instead of warping at the image's size and resizing (bicubic)
        afterwards. At the model's size this is the pipeline's warp exactly; below it, the upsampling is
        bilinear instead of bicubic.

        Args:
            images: ``(P, 3, H, W)``.
            size: ``(h, w)`` of the views, the model's input size.
            seeds: one seed a prompt, as in :meth:`forward`.

        Returns:
            ``(P * copies, 3, h, w)``, the copies of image ``p`` at rows ``p * copies + c``.
        """
        affine: K.RandomAffine = self.transforms[0]
        n, c, height, width = len(images), images.shape[1], *images.shape[-2:]
        if seeds is None:
            draws = [affine.forward_parameters(torch.Size((n * self.copies, c, height, width)))]
        else:
            draws = []
            for seed in seeds:
                seed_draws(seed, images.device)
                draws.append(affine.forward_parameters(torch.Size((self.copies, c, height, width))))
        params = {k: torch.cat([d[k].to(images.device) for d in draws]) for k in draws[0] if k != "forward_input_shape"}
        views = images.repeat_interleave(self.copies, dim=0)
        matrix = affine.compute_transformation(views, params, affine.flags)  # (N, 3, 3), pixels to pixels
        applied = params["batch_prob"].to(torch.bool).view(-1, 1, 1)
        matrix = torch.where(applied, matrix, torch.eye(3, device=matrix.device, dtype=matrix.dtype))
        align = affine.flags["align_corners"]
        warp = normalize_homography(matrix, (height, width), (height, width), align_corners=align)
        inverse = torch.linalg.inv_ex(warp).inverse  # no error check: no device sync (never singular here)
        grid = F.affine_grid(inverse[:, :2], [len(views), c, *size], align_corners=align)
        mode, padding = affine.flags["resample"].name.lower(), affine.flags["padding_mode"].name.lower()
        return F.grid_sample(views, grid, mode=mode, padding_mode=padding, align_corners=align)
