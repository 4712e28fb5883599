"""The LightningModule: wires the frozen CLIP, the image, the augmentations and the objective together.

The CLIP model is loaded in ``configure_model``, so bad prompts fail before a large model loads.
One epoch inverts one batch of prompts for ``steps`` optimisation steps; the image and the targets are
made fresh when the epoch's first batch arrives. The image is the only trainable parameter.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from typing import Any

import torch
from lightning import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable, instantiate_class
from torch import Tensor, nn

from clip_inversion.augment import Augment
from clip_inversion.clip import CLIPSpec, FrozenCLIP, load_clip
from clip_inversion.data import PromptBatch, step_seed
from clip_inversion.errors import UsageError
from clip_inversion.image import MAX_SIZE, ImageParam, PixelImage
from clip_inversion.objective import Distance, clip_grad_norm_per_prompt_, embedding_distance, l1_norm, total_variation
from clip_inversion.targets import encode_targets, load_image, parse_target

ImageFactory = Callable[[list[int], int], ImageParam]


def adam(params: Any) -> torch.optim.Optimizer:
    """The reference optimizer: Adam with learning rate 0.1."""
    return torch.optim.Adam(params, lr=0.1)


def check_optimizer(optimizer: OptimizerCallable) -> None:
    """Build the optimizer once on a stand-in parameter, so a bad setting fails before any model loads."""
    try:
        groups = optimizer([nn.Parameter(torch.zeros(1))]).param_groups
    except (ValueError, TypeError) as e:
        raise UsageError(f"--model.optimizer: {e}") from e
    if any(g.get("lr", 1) <= 0 for g in groups):
        raise UsageError(f"--model.optimizer: the learning rate must be positive, got {groups[0]['lr']}")


def build_augmentations(specs: list[dict | nn.Module] | None) -> list[nn.Module] | None:
    """Modules from ``{class_path, init_args}`` specs (modules are kept; ``None`` stays ``None``).

    Raises:
        UsageError: a spec names no class that can be imported, or arguments it does not take.
    """
    try:
        return None if specs is None else [s if isinstance(s, nn.Module) else instantiate_class((), s) for s in specs]
    except (ImportError, AttributeError, TypeError, ValueError, KeyError) as e:
        raise UsageError(
            f"--model.augmentations: {e} (each needs a full class_path, e.g. kornia.augmentation.RandomAffine)"
        ) from e


class CLIPInversion(LightningModule):
    """Optimise one image per prompt so that a frozen CLIP embeds its augmented copies near the prompt.

    Args:
        clip: the CLIP model to invert.
        ensemble: more CLIP models inverted together with ``clip``; the distance term is the weighted mean
            of every model's (each encodes at its own input size with its own mean/std and tokenizer).
        ensemble_weights: one weight per model, ``clip`` first (default: equal weights).
        steps: optimisation steps per batch of prompts.
        init_size: side of the images at the start, in pixels (a resolution schedule can grow them).
        copies: augmented copies of each image per step.
        augmentations: the augmentations applied to each copy, as ``{class_path, init_args}`` specs of Kornia
            augmentations (or modules, from Python), for example
            ``[{class_path: kornia.augmentation.RandomAffine, init_args: {degrees: 30, p: 0.5}}]``
            (configs/augment/all.yaml names them all); ``None`` is the reference's random affine, ``[]`` none.
        distance: ``"l2"`` (the reference's ``||u - v||``) or ``"cosine"`` (``1 - cos``).
        tv: weight of the four-direction total variation.
        l1: weight of the L1 norm of the image.
        grad_clip: largest gradient norm of each image's parameters; ``None`` turns clipping off.
        image: the image parameterisation, called with the prompts' seeds and ``init_size`` (default: raw
            pixels; ``clip_inversion.image.FourierImage`` and ``PyramidImage`` from YAML).
        init_image: an image file every prompt starts from (resized to ``init_size``) instead of noise.
        optimizer: builds the optimizer from the image parameters (default: Adam, lr 0.1).
        scheduler: builds an optional learning-rate scheduler, stepped every step.
        fused_warp: with the reference's single random affine, warp and resize each copy to the model's input
            size in one sampling (faster; see ``Augment.warp_to``). Other pipelines ignore it.
        channels_last: run the image tower in channels-last memory format (faster for convolutional towers).
        compile: ``torch.compile`` the image tower (see docs/benchmarks.md for when it pays).
    """

    def __init__(
        self,
        clip: CLIPSpec | None = None,
        ensemble: list[CLIPSpec] | None = None,
        ensemble_weights: list[float] | None = None,
        steps: int = 300,
        init_size: int = 32,
        copies: int = 8,
        augmentations: list[dict] | None = None,
        distance: Distance = "l2",
        tv: float = 0.005,
        l1: float = 0.0,
        grad_clip: float | None = 1.0,
        image: ImageFactory = PixelImage,
        init_image: str | None = None,
        optimizer: OptimizerCallable = adam,
        scheduler: LRSchedulerCallable | None = None,
        fused_warp: bool = False,
        channels_last: bool = False,
        compile: bool = False,
    ) -> None:
        super().__init__()
        for name, value, least in (("steps", steps, 1), ("init_size", init_size, 8), ("tv", tv, 0), ("l1", l1, 0)):
            if value < least:
                raise UsageError(f"--model.{name} must be at least {least}, got {value}")
        if init_size > MAX_SIZE:
            raise UsageError(f"--model.init_size must be at most {MAX_SIZE} pixels, got {init_size}")
        if grad_clip is not None and grad_clip <= 0:
            raise UsageError(f"--model.grad_clip must be positive or null, got {grad_clip}")
        check_optimizer(optimizer)
        self.save_hyperparameters(ignore=["augmentations", "optimizer", "scheduler", "image"])
        self.clip_spec = clip or CLIPSpec()
        self.ensemble_specs = list(ensemble or [])
        weights = ensemble_weights or [1.0] * (1 + len(self.ensemble_specs))
        if len(weights) != 1 + len(self.ensemble_specs) or min(weights) < 0 or sum(weights) <= 0:
            raise UsageError(
                f"--model.ensemble_weights needs {1 + len(self.ensemble_specs)} non-negative weights "
                f"(model.clip first, then model.ensemble) with a positive sum, got {ensemble_weights}"
            )
        self.weights = [w / sum(weights) for w in weights]
        self.clip: FrozenCLIP | None = None  # loaded by configure_model, after the prompts were checked
        self.ensemble_clips = nn.ModuleList()  # model.ensemble, loaded with model.clip
        for i in range(len(self.ensemble_specs)):  # their targets: (P, D_i) each, like `targets`
            self.register_buffer(f"targets_{i + 1}", torch.empty(0, 0))
        if init_image is not None:
            load_image(init_image)  # fails now, before any model loads, if unreadable
        self.image_factory, self.init_image = image, init_image
        self.augment = Augment(build_augmentations(augmentations), copies)
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.image = image([], init_size)
        self.register_buffer("targets", torch.empty(0, 0))
        # Numerical faults: the step at which each prompt's loss stopped being finite (-1: never), and a copy
        # of the image parameters at each prompt's last finite loss, restored for stopped prompts.
        self.register_buffer("nonfinite_step", torch.empty(0, dtype=torch.long), persistent=False)
        self.kept: list[Tensor] = []
        self.prompts: PromptBatch | None = None
        self.strict_loading = False  # checkpoints leave the frozen CLIP out

    def configure_model(self) -> None:
        """Load the frozen CLIP (Lightning calls this after the data module has read the prompts)."""
        if self.clip is None:
            self.clip = load_clip(self.clip_spec).to(self.device)
            self.ensemble_clips.extend(load_clip(spec).to(self.device) for spec in self.ensemble_specs)
            for clip in [self.clip, *self.ensemble_clips]:
                if self.hparams.channels_last:
                    clip.model.visual.to(memory_format=torch.channels_last)
                if self.hparams.compile:
                    clip.model.visual.compile()

    def setup(self, stage: str) -> None:
        """Check every prompt's target (weights, files) before any model loads."""
        for batch in getattr(self.trainer.datamodule, "batches", None) or []:
            for spec in batch.prompts:
                parse_target(spec)

    @property
    def members(self) -> list[tuple[float, FrozenCLIP, Tensor]]:
        """``(weight, model, (P, D) targets)`` of every model inverted, ``clip`` first."""
        targets = [self.targets, *(getattr(self, f"targets_{i + 1}") for i in range(len(self.ensemble_clips)))]
        return list(zip(self.weights, [self.clip, *self.ensemble_clips], targets))

    def start_batch(self, batch: PromptBatch) -> None:
        """Fresh images from the prompts' seeds, their text targets (encoded once) and a fresh optimizer."""
        self.prompts = batch
        size = self.hparams.init_size
        self.image = self.image_factory(batch.seeds, size).to(self.device)
        if self.init_image is not None:
            start = load_image(self.init_image)[None].to(self.device)
            start = torch.nn.functional.interpolate(start, size=(size, size), mode="bicubic", antialias=True)
            self.image.set_(start.clamp(0, 1).expand(len(batch.seeds), -1, -1, -1))
        self.targets = encode_targets(self.clip, batch.prompts)
        for i, clip in enumerate(self.ensemble_clips):
            setattr(self, f"targets_{i + 1}", encode_targets(clip, batch.prompts))
        self.nonfinite_step = torch.full((len(batch),), -1, dtype=torch.long, device=self.device)
        self.trainer.strategy.setup_optimizers(self.trainer)

    def on_train_batch_start(self, batch: PromptBatch, batch_idx: int) -> int | None:
        if batch.skip:  # every prompt of this epoch is already in the manifest
            self.prompts = None
            return -1  # Lightning's signal to skip the rest of the epoch
        if self.prompts is None or self.prompts.ids != batch.ids:
            self.start_batch(batch)
        return None

    def per_prompt_loss(self, seeds: list[int] | None = None) -> dict[str, Tensor]:
        """The objective's terms for the current images, each ``(P,)``; ``seeds`` seed each prompt's copies."""
        images = self.image()
        if self.hparams.fused_warp and self.augment.fusable and not self.ensemble_clips:
            # one model: warp and resize to its input size in one sampling (an ensemble resizes per member)
            views = self.augment.warp_to(images, self.clip.image_size, seeds)
        else:
            views = self.augment(images, seeds)
        if self.hparams.channels_last:
            views = views.contiguous(memory_format=torch.channels_last)
        terms = {"distance": 0}
        for i, (weight, clip, targets) in enumerate(self.members):
            emb = clip.encode_image(views).view(len(images), self.augment.copies, -1)
            distance = embedding_distance(emb, targets, self.hparams.distance)
            terms["distance"] = terms["distance"] + weight * distance
            if len(self.weights) > 1:
                terms[f"distance_{i}"] = distance  # each member's, for the logs
        if self.hparams.tv:
            terms["tv"] = total_variation(images)
        if self.hparams.l1:
            terms["l1"] = l1_norm(images)
        terms["loss"] = terms["distance"] + self.hparams.tv * terms.get("tv", 0) + self.hparams.l1 * terms.get("l1", 0)
        return terms

    def training_step(self, batch: PromptBatch, batch_idx: int) -> Tensor:
        # Each prompt's augmentations come from its own seed and the step: a prompt rerun alone sees the same.
        with self._explain_oom():
            terms = self.per_prompt_loss([step_seed(seed, batch_idx) for seed in batch.seeds])
        running = self.track_nonfinite(terms["loss"].detach(), batch_idx + 1)
        # Logging reads the values back to the host (a device sync): only on the steps the logger records.
        if self.trainer._logger_connector.should_update_logs or batch_idx + 1 == self.hparams.steps:
            size = len(batch.ids)
            for name, value in terms.items():
                self.log(f"train/{name}", value.detach().nanmean(), batch_size=size, prog_bar=name == "loss")
        # A sum, not a mean: each prompt's gradient is what it would be alone. Stopped prompts add nothing.
        return torch.where(running, terms["loss"], 0).sum()

    @torch.no_grad()
    def track_nonfinite(self, loss: Tensor, step: int) -> Tensor:
        """Stop every prompt whose loss is NaN or infinite; remember each running prompt's image otherwise.

        Tensor ops only: no host synchronisation in the step.

        Args:
            loss: ``(P,)`` this step's loss of each prompt.
            step: this step's number within the batch (1-based), recorded for newly stopped prompts.

        Returns:
            ``(P,)`` True for the prompts still running.
        """
        params = list(self.image.parameters())
        if [k.shape for k in self.kept] != [p.shape for p in params]:  # a new batch, or an upsampled image
            self.kept = [p.detach().clone() for p in params]
        running = self.nonfinite_step < 0
        finite = loss.isfinite()
        self.nonfinite_step = torch.where(running & ~finite, step, self.nonfinite_step)
        for param, kept in zip(params, self.kept):
            kept.copy_(torch.where(_per_image(running & finite, param), param, kept))
        return running & finite

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        stopped = self.nonfinite_step >= 0
        for param in self.image.parameters():
            if param.grad is not None:  # a stopped prompt's gradient may be NaN: it must not reach the optimizer
                param.grad.masked_fill_(_per_image(stopped, param), 0)

    def backward(self, loss: Tensor, *args: Any, **kwargs: Any) -> None:
        with self._explain_oom():
            super().backward(loss, *args, **kwargs)

    @contextmanager
    def _explain_oom(self) -> Iterator[None]:
        """Turn running out of device memory into a :class:`UsageError` that names the settings to lower."""
        try:
            yield
        except torch.OutOfMemoryError as e:
            prompts, size = len(self.image.seeds), self.image.size
            raise UsageError(
                f"out of {self.device.type} memory inverting {prompts} prompts x {self.augment.copies} copies "
                f"({size} px images): lower --data.batch_size (now {prompts}) or --model.copies "
                f"(now {self.augment.copies}); docs/benchmarks.md lists what fits"
            ) from e

    def configure_gradient_clipping(self, optimizer: torch.optim.Optimizer, *args: Any, **kwargs: Any) -> None:
        grads = [p.grad for p in self.image.parameters() if p.grad is not None]
        if self.hparams.grad_clip is not None and grads:
            clip_grad_norm_per_prompt_(grads, self.hparams.grad_clip)

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        self.image.project_()
        with torch.no_grad():  # the optimizer's momentum still moves stopped images: put them back
            stopped = self.nonfinite_step >= 0
            for param, kept in zip(self.image.parameters(), self.kept):
                param.copy_(torch.where(_per_image(stopped, param), kept, param))

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(self.image.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    @torch.no_grad()
    def cosine(self) -> Tensor:
        """``(P,)`` cosine between each un-augmented image and its target, under the inverted model (the weighted
        mean over an ensemble's models)."""
        images = self.image()
        return sum(w * (clip.encode_image(images) * targets).sum(dim=1) for w, clip, targets in self.members)

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Tensor]:
        """The image and the targets; the frozen CLIP is reloaded from its spec, not stored in checkpoints."""
        state = super().state_dict(*args, **kwargs)
        prefix = kwargs.get("prefix", "")
        frozen = (f"{prefix}clip.", f"{prefix}ensemble_clips.")
        return type(state)((k, v) for k, v in state.items() if not k.startswith(frozen))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["prompts"] = asdict(self.prompts) if self.prompts else None

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Take the checkpoint's shapes (the image may have been upsampled) before its tensors load."""
        state = checkpoint["state_dict"]
        self.image.resize_for({k.removeprefix("image."): v.shape for k, v in state.items() if k.startswith("image.")})
        for name in ("targets", *(f"targets_{i + 1}" for i in range(len(self.ensemble_specs)))):
            setattr(self, name, torch.empty_like(state[name]))
        self.prompts = PromptBatch(**checkpoint["prompts"]) if checkpoint.get("prompts") else None
        self.nonfinite_step = torch.full((len(state["targets"]),), -1, dtype=torch.long, device=self.device)


def _per_image(mask: Tensor, like: Tensor) -> Tensor:
    """``(P,)`` -> ``(P, 1, ..., 1)``, broadcastable against a ``(P, ...)`` parameter."""
    return mask.view(-1, *([1] * (like.ndim - 1)))
