"""The inversion objective as pure functions: every term is per image, so prompts in a batch never interact."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

Distance = Literal["l2", "cosine"]


def embedding_distance(image_emb: Tensor, target: Tensor, kind: Distance = "l2") -> Tensor:
    """Mean distance between each image's augmented copies and its target, in fp32 under any autocast.

    Args:
        image_emb: ``(P, C, D)`` unit embeddings of ``C`` copies of ``P`` images (any float dtype), as
            ``FrozenCLIP.encode_image`` gives them. Not normalised again: normalising twice changes the
            gradient's rounding, and the released loop normalises once.
        target: ``(P, D)`` unit target embeddings.
        kind: ``"l2"`` for the reference's ``||u - v||_2``, ``"cosine"`` for ``1 - cos``.

    Returns:
        ``(P,)`` float32 mean over copies, in [0, 2].
    """
    with torch.autocast(image_emb.device.type, enabled=False):
        u, v = image_emb.float(), target.float().unsqueeze(1)
        if kind == "l2":
            dist = (u - v).norm(dim=-1)
        elif kind == "cosine":
            dist = 1 - (u * v).sum(dim=-1)
        else:
            raise ValueError(f"unknown distance {kind!r}: use 'l2' or 'cosine'")
        return dist.mean(dim=1)


def total_variation(images: Tensor) -> Tensor:
    """The released four-direction total variation, per image.

    For each of the horizontal, vertical and both diagonal neighbour differences: the L2 norm over (H, W) of
    each channel, averaged over the channels; the four are summed.

    Args:
        images: ``(P, C, H, W)``.

    Returns:
        ``(P,)`` float32, one value per image.
    """
    images = images.float()
    diffs = (
        images[..., :, 1:] - images[..., :, :-1],
        images[..., 1:, :] - images[..., :-1, :],
        images[..., 1:, 1:] - images[..., :-1, :-1],
        images[..., 1:, :-1] - images[..., :-1, 1:],
    )
    return sum(d.norm(dim=(-2, -1)).mean(dim=-1) for d in diffs)


def l1_norm(images: Tensor) -> Tensor:
    """``(P, C, H, W) -> (P,)`` float32 sum of absolute pixel values of each image."""
    return images.float().flatten(1).abs().sum(dim=1)


def clip_grad_norm_per_prompt_(grads: list[Tensor], max_norm: float) -> Tensor:
    """Scale each prompt's gradients, over all of its parameters together, to a norm of at most ``max_norm``.

    For one prompt it is ``torch.nn.utils.clip_grad_norm_``, the reference's clipping; in a batch one prompt's
    gradient never rescales another's. For parameterisations made of several tensors (a pyramid's levels) a
    prompt's norm is taken over all of them.

    Args:
        grads: gradients, each ``(P, ...)`` with the prompts first; changed in place.
        max_norm: the largest norm allowed.

    Returns:
        ``(P,)`` norms before clipping.
    """
    # torch's own sequence: each tensor's norm, then the norm of those norms (bit for bit, for one prompt)
    norms = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.flatten(1), dim=1) for g in grads]), dim=0)
    scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(scale.view(-1, *([1] * (g.ndim - 1))).to(g.dtype))
    return norms
