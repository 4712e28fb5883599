"""The inversion objective as pure functions: every term is per image, so prompts in a batch never interact."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

Distance = Literal["l2", "cosine"]


def embedding_distance(image_emb: Tensor, target: Tensor, kind: Distance = "l2") -> Tensor:
    """Mean distance between each image's augmented copies and its target.

    Args:
        image_emb: ``(P, C, D)`` embeddings of ``C`` copies of ``P`` images (any norm).
        target: ``(P, D)`` target embeddings (any norm).
        kind: ``"l2"`` for the reference's ``||u - v||_2 = sqrt(2 - 2 cos)`` of unit vectors,
            ``"cosine"`` for ``1 - cos``.

    Returns:
        ``(P,)`` mean over copies, in [0, 2].
    """
    cos = torch.einsum("pcd,pd->pc", _unit(image_emb), _unit(target))
    if kind == "l2":
        # (2 - 2cos) can dip a hair below 0 in floating point; sqrt'(0) is infinite.
        dist = (2 - 2 * cos).clamp(min=1e-12).sqrt()
    elif kind == "cosine":
        dist = 1 - cos
    else:
        raise ValueError(f"unknown distance {kind!r}: use 'l2' or 'cosine'")
    return dist.mean(dim=1)


def total_variation(images: Tensor) -> Tensor:
    """The reference's four-direction total variation.

    The sum of the L2 norms of the horizontal, vertical and both diagonal neighbour differences.

    Args:
        images: ``(P, C, H, W)``.

    Returns:
        ``(P,)``, one value per image.
    """
    diffs = (
        images[..., :, :-1] - images[..., :, 1:],
        images[..., :-1, :] - images[..., 1:, :],
        images[..., 1:, :-1] - images[..., :-1, 1:],
        images[..., :-1, :-1] - images[..., 1:, 1:],
    )
    return sum(d.flatten(1).norm(dim=1) for d in diffs)


def l1_norm(images: Tensor) -> Tensor:
    """``(P, C, H, W) -> (P,)`` sum of absolute pixel values of each image."""
    return images.flatten(1).abs().sum(dim=1)


def clip_grad_norm_per_image_(grad: Tensor, max_norm: float) -> Tensor:
    """Scale each image's gradient to an L2 norm of at most ``max_norm``, in place.

    ``torch.nn.utils.clip_grad_norm_`` applied to each image alone: for one image it is the reference's
    clipping, and for a batch one prompt's gradient never rescales another's.

    Args:
        grad: ``(P, ...)`` gradient of ``P`` images.
        max_norm: the largest norm allowed.

    Returns:
        ``(P,)`` norms before clipping.
    """
    norms = grad.flatten(1).norm(dim=1)
    scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    grad.mul_(scale.view(-1, *([1] * (grad.ndim - 1))))
    return norms


def clip_grad_norm_per_prompt_(grads: list[Tensor], max_norm: float) -> Tensor:
    """Scale each prompt's gradients, over all of its parameters together, to a norm of at most ``max_norm``.

    For a single ``(P, ...)`` tensor it is :func:`clip_grad_norm_per_image_`; for parameterisations made of
    several tensors (a pyramid's levels) a prompt's norm is taken over all of them.

    Args:
        grads: gradients, each ``(P, ...)`` with the prompts first; changed in place.
        max_norm: the largest norm allowed.

    Returns:
        ``(P,)`` norms before clipping.
    """
    norms = torch.stack([g.flatten(1).pow(2).sum(dim=1) for g in grads]).sum(dim=0).sqrt()
    scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(scale.view(-1, *([1] * (g.ndim - 1))).to(g.dtype))
    return norms


def _unit(x: Tensor) -> Tensor:
    return x / x.norm(dim=-1, keepdim=True)
