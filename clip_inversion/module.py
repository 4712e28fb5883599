"""The LightningModule: Lightning's hooks wired to the pure-torch :class:`~clip_inversion.core.inverter.Inverter`.

The CLIPs load in ``configure_model``, after the prompts were checked. One epoch inverts one batch of prompts
for ``steps`` steps, starting when its first batch arrives. The image is the only trainable parameter.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict
from typing import Any

import torch
from lightning import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from clip_inversion.core.augment import Augment, build_augmentations
from clip_inversion.core.clip import CLIPSpec, load_clip
from clip_inversion.core.image import MAX_SIZE, ImageParam, PixelImage
from clip_inversion.core.inverter import Clamp, Inverter, Member, adam
from clip_inversion.core.objective import Distance
from clip_inversion.core.targets import load_image
from clip_inversion.data import PromptBatch
from clip_inversion.errors import UsageError, explained_step_errors
from clip_inversion.strategy import keep_every_rank, take_this_rank

ImageFactory = Callable[[list[int], int], ImageParam]


def check_optimizer(optimizer: OptimizerCallable) -> None:
    """Build the optimizer once on a stand-in parameter, so a bad setting fails before any model loads."""
    try:
        groups = optimizer([nn.Parameter(torch.zeros(1))]).param_groups
    except (ValueError, TypeError) as e:
        raise UsageError(f"--model.optimizer: {e}") from e
    if any(g.get("lr", 1) <= 0 for g in groups):
        raise UsageError(f"--model.optimizer: the learning rate must be positive, got {groups[0]['lr']}")


class CLIPInversion(LightningModule):
    """Optimise one image per prompt so that a frozen CLIP embeds its augmented copies near the prompt.

    Args:
        clip: the CLIP model to invert.
        ensemble: more CLIPs inverted with ``clip``; the distance is the weighted mean (each at its own size).
        ensemble_weights: one weight per model, ``clip`` first (default: equal weights).
        steps: optimisation steps per batch of prompts.
        init_size: side of the images at the start, in pixels (a resolution schedule can grow them).
        copies: augmented copies of each image per step.
        augmentations: augmentations of each copy, as ``{class_path, init_args}`` specs of Kornia augmentations
            (or modules, from Python), e.g. ``[{class_path: kornia.augmentation.RandomAffine, init_args: {p: 0.5}}]``
            (configs/augment/all.yaml names them all); ``None``: the reference's random affine; ``[]``: none.
        distance: ``"l2"`` (the reference's ``||u - v||``) or ``"cosine"`` (``1 - cos``).
        tv: weight of the released four-direction total variation.
        l1: weight of the L1 norm of the image.
        grad_clip: largest gradient norm of each image's parameters; ``None`` turns clipping off.
        clamp: ``"before_step"`` clamps pixels to [0, 1] between the gradient clipping and the optimizer's
            step, as the released loop does; ``"after_step"`` clamps after each step and each upsampling.
        image: the parameterisation, built from the prompts' seeds and ``init_size`` (default: raw pixels).
        init_image: an image file every prompt starts from (resized to ``init_size``) instead of noise.
        optimizer: builds the optimizer from the image parameters (default: Adam, lr 0.1).
        scheduler: builds an optional learning-rate scheduler, stepped every step.
        fused_warp: warp and resize each copy in one sampling (with a lone random affine and one model).
        channels_last: run the image tower in channels-last memory format (faster for convolutional towers).
        compile: ``torch.compile`` the inverter's step (CUDA graphs on a GPU; see docs/benchmarks.md).
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
        clamp: Clamp = "after_step",
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
        for bad, message in (
            (init_size > MAX_SIZE, f"--model.init_size must be at most {MAX_SIZE} pixels, got {init_size}"),
            (grad_clip is not None and grad_clip <= 0, f"--model.grad_clip must be positive or null, got {grad_clip}"),
            (clamp not in ("before_step", "after_step"), f"--model.clamp must be before_step or after_step: {clamp}"),
        ):
            if bad:
                raise UsageError(message)
        check_optimizer(optimizer)
        self.save_hyperparameters(ignore=["augmentations", "optimizer", "scheduler", "image"])
        self.clip_spec = clip or CLIPSpec()
        self.specs = [self.clip_spec, *(ensemble or [])]
        weights = ensemble_weights or [1.0] * len(self.specs)
        if len(weights) != len(self.specs) or min(weights) < 0 or sum(weights) <= 0:
            raise UsageError(
                f"--model.ensemble_weights needs {len(self.specs)} non-negative weights "
                f"(model.clip first, then model.ensemble) with a positive sum, got {ensemble_weights}"
            )
        self.weights = [w / sum(weights) for w in weights]
        if init_image is not None:
            load_image(init_image)  # fails now, before any model loads, if unreadable
        self.image_factory, self.init_image = image, init_image
        self.augment = Augment(build_augmentations(augmentations), copies)
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.inverter: Inverter | None = None  # made by configure_model, after the prompts were checked
        self.step_fn: Callable[[Tensor, int], dict[str, Tensor]] | None = None  # Inverter.terms, compiled or not
        self.prompts: PromptBatch | None = None
        self.strict_loading = False  # checkpoints leave the frozen CLIPs out

    def configure_model(self) -> None:
        """Load the frozen CLIPs (Lightning calls this after the data module has read the prompts)."""
        if self.inverter is not None:
            return
        hp = self.hparams
        members = [Member(load_clip(spec), w) for spec, w in zip(self.specs, self.weights)]
        if hp.channels_last:
            for member in members:
                member.clip.model.visual.to(memory_format=torch.channels_last)
        self.inverter = Inverter(
            members, self.augment, self.image_factory([], hp.init_size), hp.distance, hp.tv, hp.l1, hp.grad_clip,
            hp.clamp, hp.fused_warp, hp.channels_last,
        ).to(self.device)  # fmt: skip
        mode = "reduce-overhead" if self.device.type == "cuda" else None  # CUDA graphs on a GPU
        self.step_fn = torch.compile(self.inverter.terms, mode=mode) if hp.compile else self.inverter.terms

    def on_train_batch_start(self, batch: PromptBatch, batch_idx: int) -> int | None:
        if batch.skip:  # every prompt of this epoch is already in the manifest
            self.prompts = None
            return -1  # Lightning's signal to skip the rest of the epoch
        if self.prompts is None or self.prompts.ids != batch.ids:
            self.prompts = batch
            image = self.image_factory(batch.seeds, self.hparams.init_size)
            if self.init_image is not None:
                image.set_picture_(load_image(self.init_image))
            self.inverter.start(image, batch.prompts)
            self.trainer.strategy.setup_optimizers(self.trainer)
        return None

    def training_step(self, batch: PromptBatch, batch_idx: int) -> Tensor:
        # compiled, a tensor: an int would be compiled as a constant, then once more as a symbol at the next step
        step = torch.full((), batch_idx, device=self.device) if self.hparams.compile else batch_idx
        with self._explain_errors():
            terms = self.step_fn(self.inverter.image(), step)
        loss = self.inverter.loss(terms, batch_idx + 1)
        # Logging reads the values back to the host (a device sync): only on the steps the logger records.
        logging_step = (self.trainer.global_step + 1) % self.trainer.log_every_n_steps == 0
        if logging_step or batch_idx + 1 == self.hparams.steps:
            for name, value in terms.items():
                self.log(f"train/{name}", value.detach().nanmean(), batch_size=len(batch), prog_bar=name == "loss")
        return loss

    def backward(self, loss: Tensor, *args: Any, **kwargs: Any) -> None:
        with self._explain_errors():
            super().backward(loss, *args, **kwargs)

    def configure_gradient_clipping(self, optimizer: torch.optim.Optimizer, *args: Any, **kwargs: Any) -> None:
        self.inverter.before_step()  # Lightning calls this between backward and the optimizer's step

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        self.inverter.after_step()

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(self.inverter.image.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _explain_errors(self) -> AbstractContextManager[None]:
        sizes = lambda: (len(self.inverter.seeds), self.inverter.image.size, self.augment.copies)  # noqa: E731
        return explained_step_errors(self.device.type, self.hparams.compile, sizes)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        keep_every_rank(checkpoint, asdict(self.prompts) if self.prompts else None)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Take this rank's state and its shapes (the image may have been upsampled) before its tensors load."""
        self.inverter.resize_for(take_this_rank(checkpoint, self.trainer)["state_dict"], prefix="inverter.")
        self.prompts = PromptBatch(**checkpoint["prompts"]) if checkpoint.get("prompts") else None
