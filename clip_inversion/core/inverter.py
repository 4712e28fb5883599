"""The inversion as one torch module: the images, their augmented copies, the inverted models and the objective.

:class:`Inverter` needs no Trainer: ``forward(step)`` gives each prompt's loss terms, and three small methods
bracket the optimizer's step (:meth:`Inverter.before_step`, :meth:`Inverter.after_step`, :meth:`Inverter.upsample`).
A plain loop inverts with it (:meth:`Inverter.step` is one such step)::

    inverter.start(PixelImage(seeds, 64), prompts)
    optimizer = torch.optim.Adam(inverter.image.parameters(), lr=0.1)
    for step in range(steps):
        inverter.step(optimizer, step)

``forward`` has no loop over prompts, no host synchronisation and no host-to-device copy, so it compiles as
one graph (``torch.compile(inverter.terms, fullgraph=True)``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Literal

import torch
from torch import Tensor, nn

from clip_inversion.core.augment import Augment, step_keys
from clip_inversion.core.clip import FrozenCLIP
from clip_inversion.core.image import ImageParam, PixelImage
from clip_inversion.core.objective import (
    Distance,
    clip_grad_norm_per_prompt_,
    embedding_distance,
    l1_norm,
    total_variation,
)
from clip_inversion.core.targets import encode_targets

log = logging.getLogger(__name__)

Clamp = Literal["before_step", "after_step"]


def adam(params: Iterable[Tensor]) -> torch.optim.Optimizer:
    """The reference optimizer: Adam with learning rate 0.1."""
    return torch.optim.Adam(params, lr=0.1)


class Member(nn.Module):
    """One inverted model: a frozen CLIP, the prompts' ``(P, D)`` unit targets under it, and its weight.

    Its state dict holds the targets only: the frozen CLIP is reloaded from its name, not checkpointed.
    """

    def __init__(self, clip: FrozenCLIP, weight: float = 1.0) -> None:
        super().__init__()
        self.clip, self.weight = clip, weight
        self.register_buffer("targets", torch.empty(0, 0))
        self.register_state_dict_post_hook(_drop_frozen_clip)


class NonFiniteGuard(nn.Module):
    """Stops each prompt whose loss turns NaN or infinite, and keeps its last image with a finite loss.

    ``stopped_at`` ``(P,)`` holds the step at which each prompt stopped (-1: running); it is saved in
    checkpoints. Tensor ops only: no host synchronisation.
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("stopped_at", torch.empty(0, dtype=torch.long))
        self.kept: list[Tensor] = []

    def reset(self, prompts: int) -> None:
        self.stopped_at = torch.full((prompts,), -1, dtype=torch.long, device=self.stopped_at.device)
        self.kept = []

    @torch.no_grad()
    def update(self, loss: Tensor, params: list[Tensor], step: int | Tensor) -> Tensor:
        """Stop the prompts whose ``(P,)`` ``loss`` is not finite at ``step``; keep the running ones' images.

        Returns:
            ``(P,)`` True for the prompts still running.
        """
        if [k.shape for k in self.kept] != [p.shape for p in params]:  # a new batch, or an upsampled image
            self.kept = [p.detach().clone() for p in params]
        running, finite = self.stopped_at < 0, loss.isfinite()
        self.stopped_at = torch.where(running & ~finite, step, self.stopped_at)
        for param, kept in zip(params, self.kept):
            kept.copy_(torch.where(_per_image(running & finite, param), param, kept))
        return running & finite

    @torch.no_grad()
    def mask_grads_(self, params: list[Tensor]) -> None:
        """Zero the stopped prompts' gradients (they may be NaN): nothing of theirs reaches the optimizer."""
        for param in params:
            if param.grad is not None:
                param.grad.masked_fill_(_per_image(self.stopped_at >= 0, param), 0)

    @torch.no_grad()
    def restore_(self, params: list[Tensor]) -> None:
        """Put the stopped prompts' kept images back (the optimizer's momentum still moves them)."""
        for param, kept in zip(params, self.kept):
            param.copy_(torch.where(_per_image(self.stopped_at >= 0, param), kept, param))


class Inverter(nn.Module):
    """One image a prompt, optimised so that frozen CLIPs embed its augmented copies near the prompt.

    Args:
        members: the inverted models; the distance term is their weighted sum (weights summing to 1).
        augment: makes the augmented copies.
        image: the image parameterisation (replaced by :meth:`start` for each batch of prompts).
        distance: ``"l2"`` (the reference's ``||u - v||``) or ``"cosine"`` (``1 - cos``).
        tv: weight of the released four-direction total variation.
        l1: weight of the L1 norm of the image.
        grad_clip: largest gradient norm of each prompt's image; ``None`` turns clipping off.
        clamp: when pixels are clamped to [0, 1]: ``"before_step"`` (the released loop: after the gradient is
            clipped, before the optimizer's step, so the models see the unclamped result of the last step) or
            ``"after_step"`` (after each step and each upsampling: the models only see images in [0, 1]).
        fused_warp: with a lone random affine and one model, warp and resize in one sampling
            (see :meth:`Augment.warp_to`).
        channels_last: feed the image towers channels-last views.
    """

    def __init__(
        self,
        members: list[Member],
        augment: Augment,
        image: ImageParam | None = None,
        distance: Distance = "l2",
        tv: float = 0.005,
        l1: float = 0.0,
        grad_clip: float | None = 1.0,
        clamp: Clamp = "after_step",
        fused_warp: bool = False,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        if clamp not in ("before_step", "after_step"):
            raise ValueError(f"clamp must be 'before_step' or 'after_step', got {clamp!r}")
        self.members, self.augment = nn.ModuleList(members), augment
        self.image = image if image is not None else PixelImage([], 8)
        self.distance, self.tv, self.l1, self.grad_clip, self.clamp = distance, tv, l1, grad_clip, clamp
        self.fused = fused_warp and augment.fusable and len(members) == 1
        if fused_warp and not self.fused:
            log.warning(
                "--model.fused_warp=true fuses a lone RandomAffine into the resize for one model; with these "
                "augmentations or models each copy is warped and resized apart, as without it"
            )
        self.channels_last = channels_last
        self.guard = NonFiniteGuard()
        self.register_buffer("seeds", torch.empty(0, dtype=torch.long))

    @property
    def device(self) -> torch.device:
        return self.seeds.device

    def start(self, image: ImageParam, prompts: list[str]) -> None:
        """A new batch of prompts: their images, each member's targets (encoded once), the guard reset."""
        self.image = image.to(self.device)
        self.seeds = torch.tensor(image.seeds, dtype=torch.long, device=self.device)
        for member in self.members:
            member.targets = encode_targets(member.clip, prompts)
        self.guard.reset(len(prompts))

    def forward(self, step: int | Tensor) -> dict[str, Tensor]:
        """Each prompt's loss terms at ``step``: ``distance``, ``tv``/``l1`` (when weighted), ``loss``, each
        ``(P,)`` float32; ``distance_<i>`` for each member of an ensemble. Prompt ``p``'s copies depend on
        ``(seeds[p], step)`` only."""
        return self.terms(self.image(), step)

    def terms(self, images: Tensor, step: int | Tensor) -> dict[str, Tensor]:
        """:meth:`forward` for given ``(P, 3, H, W)`` images: the part to compile, which stays the same graph when
        a new batch or an upsampling replaces the image parameters."""
        terms: dict[str, Tensor] = {}
        # The regularisers first, as the released loop orders them: autograd then sums the image's gradient
        # contributions in the same order, so the paper config matches it bit for bit.
        if self.tv:
            terms["tv"] = total_variation(images)
        if self.l1:
            terms["l1"] = l1_norm(images)
        keys = step_keys(self.seeds, step)
        if self.fused:
            views = self.augment.warp_to(images, self.members[0].clip.image_size, keys)
        else:
            views = self.augment(images, keys)
        if self.channels_last:
            views = views.contiguous(memory_format=torch.channels_last)
        distances = []
        for member in self.members:
            emb = member.clip.encode_image(views).view(len(images), self.augment.copies, -1)
            distances.append(embedding_distance(emb, member.targets, self.distance))
        terms["distance"] = sum(m.weight * d for m, d in zip(self.members, distances))
        if len(self.members) > 1:
            terms.update({f"distance_{i}": d for i, d in enumerate(distances)})
        loss = terms["distance"] + self.tv * terms["tv"] if self.tv else terms["distance"]
        if self.l1:
            loss = loss + self.l1 * terms["l1"]
        terms["loss"] = loss
        return terms

    def loss(self, terms: dict[str, Tensor], step: int | Tensor) -> Tensor:
        """The scalar to minimise: the sum of the running prompts' losses (a sum, not a mean, so that each
        prompt's gradient is what it would be alone). Stops the prompts whose loss is not finite."""
        running = self.guard.update(terms["loss"].detach(), list(self.image.parameters()), step)
        return torch.where(running, terms["loss"], 0).sum()

    def before_step(self) -> None:
        """After backward, before the optimizer's step: mask stopped prompts, clip, clamp (``before_step``)."""
        params = list(self.image.parameters())
        self.guard.mask_grads_(params)
        grads = [p.grad for p in params if p.grad is not None]
        if self.grad_clip is not None and grads:
            clip_grad_norm_per_prompt_(grads, self.grad_clip)
        if self.clamp == "before_step":
            self.image.project_()

    def after_step(self) -> None:
        """After the optimizer's step: clamp (``after_step``), and put stopped prompts back."""
        if self.clamp == "after_step":
            self.image.project_()
        self.guard.restore_(list(self.image.parameters()))

    def step(self, optimizer: torch.optim.Optimizer, step: int) -> dict[str, Tensor]:
        """One whole optimisation step without Lightning (the LightningModule's hooks do the same); returns
        the step's terms."""
        optimizer.zero_grad()
        terms = self(step)
        self.loss(terms, step).backward()
        self.before_step()
        optimizer.step()
        self.after_step()
        return terms

    def upsample(self, size: int) -> None:
        """Grow the images to ``size`` (bicubic) as new parameters; the optimizer must be rebuilt after."""
        self.image.upsample(size)
        if self.clamp == "after_step":
            self.image.project_()

    @torch.no_grad()
    def cosine(self) -> Tensor:
        """``(P,)`` cosine between each un-augmented image and its target (weighted mean over members)."""
        images = self.image()
        return sum(m.weight * (m.clip.encode_image(images) * m.targets).sum(dim=1) for m in self.members)

    def resize_for(self, state: Mapping[str, Tensor], prefix: str = "") -> None:
        """Take the shapes of a checkpoint's ``state`` (an upsampled image, a batch's targets) before it loads."""
        ours = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
        self.image.resize_for({k.removeprefix("image."): v.shape for k, v in ours.items() if k.startswith("image.")})
        for name, buffer in self.named_buffers():
            if name in ours and ".clip." not in name:
                module, _, leaf = name.rpartition(".")
                empty = torch.empty(ours[name].shape, dtype=ours[name].dtype, device=buffer.device)
                setattr(self.get_submodule(module) if module else self, leaf, empty)


def _drop_frozen_clip(module: Member, state: dict[str, Tensor], prefix: str, metadata: dict) -> None:
    for key in [k for k in state if k.startswith(f"{prefix}clip.")]:
        del state[key]


def _per_image(mask: Tensor, like: Tensor) -> Tensor:
    """``(P,)`` -> ``(P, 1, ..., 1)``, broadcastable against a ``(P, ...)`` parameter."""
    return mask.view(-1, *([1] * (like.ndim - 1)))
