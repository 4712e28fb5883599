"""Callbacks: the resolution schedule, the image and manifest writer, and TensorBoard progress images."""

from __future__ import annotations

import logging
import math
import textwrap
from itertools import pairwise
from pathlib import Path
from typing import Any

import torch
from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from PIL import Image, ImageDraw
from torch import Tensor
from torchvision.transforms.functional import pil_to_tensor, to_pil_image
from torchvision.utils import make_grid

from clip_inversion.clip import CLIPSpec, load_clip
from clip_inversion.data import PromptBatch
from clip_inversion.errors import UsageError
from clip_inversion.image import MAX_SIZE
from clip_inversion.metrics import JudgeCosine, ZeroShotAccuracy
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
        if size is not None and not batch.skip and pl_module.image.size < size:
            pl_module.image.upsample(size)
            trainer.strategy.setup_optimizers(trainer)  # takes effect on this very step


class InversionWriter(Callback):
    """Writes each prompt's final PNG, its snapshots and its ``manifest.jsonl`` line into the run directory.

    The run directory is the trainer's ``default_root_dir``. Layout: ``images/<id>_<prompt>.png``,
    ``snapshots/<id>_<prompt>/step-<n>.png`` and ``manifest.jsonl``, one JSON object a prompt, appended by
    rank 0 after every rank has written its images.

    Args:
        snapshot_steps: steps (counted within a batch, 1-based) at which to save every image.
        nsfw: screen every image written (and shown by ``ProgressImages``) with NudeNet: ``score`` records each
            final image's score in the manifest, ``blur`` also blurs flagged images, ``withhold`` also keeps
            them off disk (the manifest line stays, with ``image: null``). Needs ``clip-inversion[nsfw]``.
        nsfw_threshold: the NudeNet detection score (0-1) from which an image is flagged.
    """

    def __init__(
        self, snapshot_steps: list[int] | None = None, nsfw: Action | None = None, nsfw_threshold: float = 0.5
    ) -> None:
        self.snapshot_steps = set(snapshot_steps or [])
        self.last_step = 0  # the last step of the current batch that completed
        self.screen = NSFWScreen(nsfw, nsfw_threshold) if nsfw else None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        check_writable(trainer.default_root_dir)  # every rank writes its own images
        if trainer.is_global_zero:  # a run killed while writing leaves temporary files: not images
            for tmp in Path(trainer.default_root_dir).glob("*/**/.tmp-*.png"):
                tmp.unlink(missing_ok=True)

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: PromptBatch, batch_idx: int
    ) -> None:
        step = self.last_step = batch_idx + 1
        if step in self.snapshot_steps:
            pending = _pending(batch)
            images, screened = self._screen(pl_module.image().detach().cpu()[pending])
            for image, i, nsfw in zip(images, pending, screened, strict=True):
                if nsfw is None or nsfw["action"] != "withheld":
                    path = Path(trainer.default_root_dir, "snapshots", image_stem(batch.ids[i], batch.prompts[i]))
                    atomic_save_image(image, path / f"step-{step:05d}.png")

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
        pending, cosines = _pending(batch), pl_module.cosine().tolist()
        images, screened = self._screen(pl_module.image().detach().cpu()[pending])
        nonfinite = pl_module.nonfinite_step.tolist()
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
            images, cosines = pl_module.image().detach().float().cpu(), pl_module.cosine().tolist()
        pending = _pending(batch)
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
    """``last.ckpt`` every ``every_n_train_steps`` steps in ``<run dir>/checkpoints``, the same folder for every
    rerun of a command, so ``--ckpt_path=last`` resumes mid-batch (image, resolution, optimizer and all).

    Args:
        every_n_train_steps: steps between checkpoints.
    """

    def __init__(self, every_n_train_steps: int = 100) -> None:
        super().__init__(every_n_train_steps=every_n_train_steps, save_last=True, save_top_k=0)

    def _run_dir_checkpoints(self, trainer: Trainer) -> None:
        if self.dirpath is None:
            self.dirpath = str(Path(trainer.default_root_dir) / "checkpoints")

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._run_dir_checkpoints(trainer)
        super().setup(trainer, pl_module, stage)

    def _find_last_checkpoints(self, trainer: Trainer) -> set[str]:  # what --ckpt_path=last looks for
        self._run_dir_checkpoints(trainer)
        return super()._find_last_checkpoints(trainer)


def _models(pl_module: LightningModule) -> list[dict[str, Any]]:
    """Every model inverted (``model.clip`` first, then ``model.ensemble``): label, weight, whether random."""
    specs = [pl_module.clip_spec, *pl_module.ensemble_specs]
    return [
        {"model": spec.label, "weight": round(weight, 6), "random_weights": spec.random_weights}
        for spec, weight in zip(specs, pl_module.weights, strict=True)
    ]


def _pending(batch: PromptBatch) -> list[int]:
    return [i for i, p in enumerate(batch.pending) if p]


class JudgeScores(Callback):
    """Score the images with an independent judge CLIP while they form, and log the scores to TensorBoard.

    Every ``every_n_steps`` steps and at each batch's last step, each prompt's ``judge/cosine/<id>_<prompt>``
    (the judge's cosine to its prompt) and ``judge/correct/<id>_<prompt>`` (1 when the judge classifies the
    image as its prompt among the candidates, else 0); after each batch's last step, the running aggregates
    over every prompt finished so far in this session: ``judge/cosine`` and ``judge/accuracy``.

    Args:
        judge: the judge's model name (default: the bundled ``toy-judge``), any name ``--model.clip.model_name``
            takes.
        pretrained: the judge's pretrained tag or checkpoint file.
        every_n_steps: steps between per-prompt scores.
        candidates: prompts to classify among (default: every prompt of the run).
    """

    def __init__(
        self,
        judge: str = "toy-judge",
        pretrained: str | None = None,
        every_n_steps: int = 50,
        candidates: list[str] | None = None,
    ) -> None:
        self.spec, self.every_n_steps, self.candidates = CLIPSpec(judge, pretrained), every_n_steps, candidates
        self.scores: dict[str, float] = {}  # the session's judge/cosine and judge/accuracy so far

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        prompts = list(dict.fromkeys(p.text for p in trainer.datamodule.all_prompts()))
        candidates = list(dict.fromkeys([*(self.candidates or []), *prompts]))
        judge = load_clip(self.spec).to(pl_module.device)
        self.step_cosine, self.run_cosine = (JudgeCosine(prompts, judge).to(pl_module.device) for _ in range(2))
        self.step_accuracy, self.run_accuracy = (
            ZeroShotAccuracy(candidates, judge).to(pl_module.device) for _ in range(2)
        )

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: PromptBatch, batch_idx: int
    ) -> None:
        step, last = batch_idx + 1, pl_module.hparams.steps
        if step % self.every_n_steps and step != last:
            return
        pending = _pending(batch)
        with torch.no_grad():
            images = pl_module.image().detach().float()[pending]
        prompts = [batch.prompts[i] for i in pending]
        mine = []
        if pending:
            for metric in (self.step_cosine, self.step_accuracy):
                metric.reset()
                metric.update(images, prompts)
            cosine, correct = self.step_cosine.per_prompt(), self.step_accuracy.per_prompt()["prompt"]
            for i in pending:
                stem = image_stem(batch.ids[i], batch.prompts[i])
                k, c = (
                    self.step_cosine.prompts.index(batch.prompts[i]),
                    self.step_accuracy.prompts.index(batch.prompts[i]),
                )
                mine.append((stem, cosine[k].item(), correct[c].item()))
            if step == last:
                self.run_cosine.update(images, prompts)
                self.run_accuracy.update(images, prompts)
        everyone = [entry for rank in gather_objects(mine) for entry in rank]
        aggregate = None
        if step == last:  # every rank takes part in the synchronisation
            aggregate = (self.run_cosine.compute().item(), self.run_accuracy.compute()["prompt"].item())
            if not any(math.isnan(v) for v in aggregate):
                self.scores = dict(zip(("judge/cosine", "judge/accuracy"), aggregate))
        experiment = getattr(trainer.logger, "experiment", None)
        if not trainer.is_global_zero or not hasattr(experiment, "add_scalar"):
            return
        for stem, cosine_value, correct_value in everyone:
            experiment.add_scalar(f"judge/cosine/{stem}", cosine_value, trainer.global_step)
            experiment.add_scalar(f"judge/correct/{stem}", correct_value, trainer.global_step)
        if aggregate is not None and not any(math.isnan(v) for v in aggregate):
            experiment.add_scalar("judge/cosine", aggregate[0], trainer.global_step)
            experiment.add_scalar("judge/accuracy", aggregate[1], trainer.global_step)
