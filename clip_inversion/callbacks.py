"""Callbacks: the resolution schedule, the image and manifest writer, TensorBoard progress images and progress
lines for log files."""

from __future__ import annotations

import logging
import math
import sys
import textwrap
import time
from itertools import pairwise
from pathlib import Path
from typing import Any

import torch
from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar
from PIL import Image, ImageDraw
from torch import Tensor
from torchvision.transforms.functional import pil_to_tensor, to_pil_image
from torchvision.utils import make_grid

from clip_inversion.core.image import MAX_SIZE
from clip_inversion.data import PromptBatch
from clip_inversion.errors import UsageError
from clip_inversion.nsfw import Action, NSFWScreen
from clip_inversion.rundir import append_records, atomic_save_image, check_writable, image_stem
from clip_inversion.strategy import gather_objects

log = logging.getLogger(__name__)


class ResolutionSchedule(Callback):
    """Grow the image at given steps: bicubic upsampling into a new parameter and a fresh optimizer.

    Args:
        milestones: ``{step: size}``, for example the reference's ``{900: 128, 1800: 224}``; steps count
            from the start of each batch of prompts, sizes must increase.
    """

    def __init__(self, milestones: dict[int, int]) -> None:
        milestones = {int(k): int(v) for k, v in milestones.items()}  # YAML may hand keys over as strings
        self.milestones = dict(sorted(milestones.items()))

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Check the schedule, and against the module's settings, before any model loads."""
        steps, sizes = list(self.milestones), list(self.milestones.values())
        if any(s <= 0 for s in steps) or any(b <= a for a, b in pairwise(sizes)) or max(sizes, default=0) > MAX_SIZE:
            raise UsageError(
                f"ResolutionSchedule milestones must be at positive steps with growing sizes of at most {MAX_SIZE} "
                f"pixels: {self.milestones}"
            )
        last_step, init_size = pl_module.hparams.steps, pl_module.hparams.init_size
        late = [s for s in steps if s >= last_step]
        if late:  # a shortened run (--model.steps=N for a quick look) is fine: those sizes are never reached
            log.warning(
                "ResolutionSchedule milestones at steps %s come after the last step (--model.steps=%d): never reached",
                late,
                last_step,
            )
        if sizes and sizes[0] <= init_size:
            raise UsageError(
                f"ResolutionSchedule sizes must be larger than --model.init_size={init_size}: {self.milestones}; "
                "lower --model.init_size, or give the schedule larger sizes in a config of your own (trainer.callbacks)"
            )

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        size = self.milestones.get(batch_idx)
        if size is not None and not batch.skip and pl_module.inverter.image.size < size:
            pl_module.inverter.upsample(size)
            trainer.strategy.setup_optimizers(trainer)  # takes effect on this very step


class InversionWriter(Callback):
    """Writes each prompt's final PNG, its snapshots and its ``manifest.jsonl`` line into the run directory.

    The run directory is the trainer's ``default_root_dir``. Layout: ``images/<id>_<prompt>.png``,
    ``snapshots/<id>_<prompt>/step-<n>.png`` and ``manifest.jsonl``, one JSON object a prompt, appended by
    rank 0 after every rank has written its images.

    Args:
        snapshot_steps: steps (counted within a batch, 1-based) at which to save every image.
        minmax: save each image min-max normalised on its own, as the released code saves its images
            (``save_image(normalize=True, scale_each=True)``); otherwise values are clamped to [0, 1].
        nsfw: screen every image written (and shown by ``ProgressImages``) with NudeNet: ``score`` records each
            final image's score in the manifest, ``blur`` also blurs flagged images, ``withhold`` also keeps
            them off disk (the manifest line stays, with ``image: null``). Needs ``clip-inversion[nsfw]``.
        nsfw_threshold: the NudeNet detection score (0-1) from which an image is flagged.
    """

    def __init__(
        self,
        snapshot_steps: list[int] | None = None,
        minmax: bool = False,
        nsfw: Action | None = None,
        nsfw_threshold: float = 0.5,
    ) -> None:
        self.snapshot_steps, self.minmax = set(snapshot_steps or []), minmax
        self.last_step = 0  # the last step of the current batch that completed
        self.screen = NSFWScreen(nsfw, nsfw_threshold) if nsfw else None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        last_step = pl_module.hparams.steps
        late = sorted(s for s in self.snapshot_steps if s > last_step)
        if late:  # as for the resolution schedule: a shortened run is fine, those snapshots are never taken
            log.warning(
                "--writer.snapshot_steps %s come after the last step (--model.steps=%d): never written",
                late,
                last_step,
            )
        check_writable(trainer.default_root_dir)  # every rank writes its own images
        if trainer.is_global_zero:  # a run killed while writing leaves temporary files: not images
            for tmp in Path(trainer.default_root_dir).glob("*/**/.tmp-*.png"):
                tmp.unlink(missing_ok=True)

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: PromptBatch, batch_idx: int
    ) -> None:
        step = self.last_step = batch_idx + 1
        if step in self.snapshot_steps:
            pending = pending_indices(batch)
            images, screened = self._screen(self._pixels(pl_module)[pending])
            for image, i, nsfw in zip(images, pending, screened, strict=True):
                if nsfw is None or nsfw["action"] != "withheld":
                    path = Path(trainer.default_root_dir, "snapshots", image_stem(batch.ids[i], batch.prompts[i]))
                    atomic_save_image(image, path / f"step-{step:05d}.png")

    def _pixels(self, pl_module: LightningModule) -> Tensor:
        """``(P, 3, H, W)`` the images as saved: clamped to [0, 1], or min-max normalised each."""
        images = pl_module.inverter.image().detach().float().cpu()
        if not self.minmax:
            return images.clamp(0, 1)
        low, high = images.amin(dim=(1, 2, 3), keepdim=True), images.amax(dim=(1, 2, 3), keepdim=True)
        return (images - low) / (high - low).clamp(min=1e-5)

    def _screen(self, images: Tensor) -> tuple[Tensor, list[dict | None]]:
        """The images to write and each one's NSFW screen result (``None`` each without a screen)."""
        return self.screen.apply(images) if self.screen else (images, [None] * len(images))

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        batch: PromptBatch | None = pl_module.prompts
        finished, self.last_step = self.last_step == pl_module.hparams.steps, 0
        # Nothing to write for a skipped epoch, or for a batch cut short (max_steps, a stop signal): its
        # prompts stay unfinished and are redone or resumed from a checkpoint. Both hold on every rank alike.
        if batch is None or not finished:
            return
        run_dir = Path(trainer.default_root_dir)
        pending, cosines = pending_indices(batch), pl_module.inverter.cosine().tolist()
        images, screened = self._screen(self._pixels(pl_module)[pending])
        nonfinite = pl_module.inverter.guard.stopped_at.tolist()
        records = []
        for image, i, nsfw in zip(images, pending, screened, strict=True):
            path = run_dir / "images" / f"{image_stem(batch.ids[i], batch.prompts[i])}.png"
            withheld = nsfw is not None and nsfw["action"] == "withheld"
            if not withheld:
                atomic_save_image(image, path)
            if nonfinite[i] >= 0:
                log.warning(
                    "prompt %s (%r): the loss was not finite at step %d; its image is the last with a finite loss",
                    batch.ids[i],
                    batch.prompts[i],
                    nonfinite[i],
                )
            records.append(
                {
                    "id": batch.ids[i],
                    "prompt": batch.prompts[i],
                    "image": None if withheld else path.relative_to(run_dir).as_posix(),
                    "model": pl_module.clip_spec.label,
                    "models": _models(pl_module),
                    "seed": batch.seeds[i],
                    "steps": pl_module.hparams.steps,
                    "resolution": image.shape[-1],
                    "cosine": round(cosines[i], 6) if math.isfinite(cosines[i]) else None,
                    "tags": batch.tags[i],
                    "nonfinite_step": nonfinite[i] if nonfinite[i] >= 0 else None,
                }
            )
            if nsfw is not None:
                records[-1]["nsfw"] = nsfw
        everyone = gather_objects(records)
        if trainer.is_global_zero:
            append_records(run_dir, [r for rank in everyone for r in rank])


class ProgressImages(Callback):
    """Every ``every_n_steps`` steps, log a grid of every rank's images and each prompt's cosine to TensorBoard.

    The grids, one tag per batch of prompts, show the progression of the paper's Figure 2. With the writer's
    NSFW screen on (``--writer.nsfw``), flagged images are blurred or greyed out here too.
    """

    def __init__(self, every_n_steps: int = 50) -> None:
        self.every_n_steps = every_n_steps
        self.screen: NSFWScreen | None = None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        writers = [c for c in trainer.callbacks if isinstance(c, InversionWriter)]
        self.screen = writers[0].screen if writers else None

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: PromptBatch, batch_idx: int
    ) -> None:
        step = batch_idx + 1
        if step % self.every_n_steps and step != pl_module.hparams.steps:
            return
        with torch.no_grad():
            images = pl_module.inverter.image().detach().float().cpu().clamp(0, 1)
            cosines = pl_module.inverter.cosine().tolist()
        pending = pending_indices(batch)
        images = self.screen.apply(images[pending])[0] if self.screen and pending else images[pending]
        mine = [(batch.ids[i], batch.prompts[i], image, cosines[i]) for image, i in zip(images, pending)]
        everyone = [entry for rank in gather_objects(mine) for entry in rank]
        experiment = getattr(trainer.logger, "experiment", None)
        if not trainer.is_global_zero or not everyone or not hasattr(experiment, "add_image"):
            return
        tiles = [labelled(image, f"{prompt}\ncosine {cosine:.2f}") for _, prompt, image, cosine in everyone]
        experiment.add_image(f"progress/epoch-{trainer.current_epoch:04d}", make_grid(tiles, nrow=8), step)
        for prompt_id, prompt, _, cosine in everyone:
            experiment.add_scalar(f"cosine/{image_stem(prompt_id, prompt)}", cosine, trainer.global_step)


class LogProgress(ProgressBar):
    """Progress as plain lines on standard error, for a log file: every ``every_n_steps`` steps of a batch of prompts
    and at its last step, ``clip-inversion: batch 1/2, step 20/200, loss 0.8123, 12 s``. The CLI uses it instead of
    Lightning's bar when standard error is not a terminal (a redirect, SLURM), where every redraw of the bar would
    be a line.

    Args:
        every_n_steps: steps between lines; by default the multiple of ``log_every_n_steps`` (the steps whose loss
            is logged) nearest to a tenth of a batch's steps.
    """

    def __init__(self, every_n_steps: int | None = None) -> None:
        super().__init__()
        if every_n_steps is not None and every_n_steps < 1:
            raise UsageError(f"LogProgress every_n_steps must be at least 1, got {every_n_steps}")
        self.every_n_steps, self.enabled, self.started = every_n_steps, True, 0.0

    def disable(self) -> None:
        self.enabled = False

    def enable(self) -> None:
        self.enabled = True

    def interval(self, trainer: Trainer, steps: int) -> int:
        """Steps between lines for batches of ``steps`` steps."""
        logged = max(1, trainer.log_every_n_steps)
        return self.every_n_steps or max(1, round(steps / 10 / logged)) * logged

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.started = time.monotonic()

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: PromptBatch, batch_idx: int
    ) -> None:
        step, steps = batch_idx + 1, pl_module.hparams.steps
        if not self.enabled or (step % self.interval(trainer, steps) and step != steps):
            return
        loss = trainer.progress_bar_metrics.get("train/loss")
        line = f"batch {trainer.current_epoch + 1}/{trainer.max_epochs}, step {step}/{steps}"
        line += f", loss {loss:.4f}" if loss is not None else ""
        print(f"clip-inversion: {line}, {time.monotonic() - self.started:.0f} s", file=sys.stderr, flush=True)


def labelled(image: Tensor, label: str, width: int = 128) -> Tensor:
    """An image with its label below, for TensorBoard grids.

    Args:
        image: ``(3, H, W)`` in [0, 1], scaled (nearest neighbour) to ``width`` pixels wide.
        label: up to three lines (longer lines are wrapped, then cut).
        width: the tile's width in pixels.

    Returns:
        ``(3, H * width / W + 36, width)`` in [0, 1].
    """
    height = round(image.shape[-2] * width / image.shape[-1])
    picture = to_pil_image(image.clamp(0, 1)).resize((width, height), Image.NEAREST)
    tile = Image.new("RGB", (width, height + 36), "white")
    tile.paste(picture, (0, 0))
    lines = [line for text in label.splitlines() for line in textwrap.wrap(text, width // 6) or [""]]
    ImageDraw.Draw(tile).multiline_text((2, height + 1), "\n".join(lines[:3]), fill="black", spacing=1)
    return pil_to_tensor(tile).float() / 255


class RunCheckpoint(ModelCheckpoint):
    """``last.ckpt`` every ``every_n_train_steps`` steps in ``dirpath``, the same folder for every rerun of a
    command, so ``--ckpt_path=last`` resumes mid-batch (image, resolution, optimizer and all).

    Args:
        every_n_train_steps: steps between checkpoints.
        dirpath: where ``last.ckpt`` goes; the CLI sets it to ``<run dir>/checkpoints`` when it is not given.
    """

    def __init__(self, every_n_train_steps: int = 100, dirpath: str | None = None) -> None:
        super().__init__(dirpath=dirpath, every_n_train_steps=every_n_train_steps, save_last=True, save_top_k=0)


def _models(pl_module: LightningModule) -> list[dict[str, Any]]:
    """Every model inverted (``model.clip`` first, then ``model.ensemble``): label, weight, whether random."""
    return [
        {"model": spec.label, "weight": round(weight, 6), "random_weights": spec.random_weights}
        for spec, weight in zip(pl_module.specs, pl_module.weights, strict=True)
    ]


def pending_indices(batch: PromptBatch) -> list[int]:
    """Positions of the prompts of ``batch`` that are written (not padding, not finished before)."""
    return [i for i, p in enumerate(batch.pending) if p]
