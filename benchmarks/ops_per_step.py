"""Operator calls of one steady training step: the count must not grow with the number of prompts.

    python benchmarks/ops_per_step.py --prompts 1
    python benchmarks/ops_per_step.py --prompts 16
    python benchmarks/ops_per_step.py --prompts 16 --augmentations configs/augment/all.yaml

Runs the quickstart's module (the bundled toy subject, the reference augmentation) under a Lightning Trainer
on the CPU, and counts with ``torch.profiler`` every operator call of the step after ``--warmup`` steps: the
augmentation's draws, the warp, the encoder, the objective, backward, clipping, Adam and Lightning's own work.
A loop over prompts anywhere in the step would show as a count that grows with ``--prompts`` (as it does for
an augmentation that falls back to Kornia's own sampling, such as ``ColorJitter`` in
``configs/augment/all.yaml``). The last line is ``ops_per_step=N``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import yaml
from lightning import Callback, LightningModule, Trainer
from torch.profiler import ProfilerActivity, profile

from clip_inversion.core.augment import build_augmentations
from clip_inversion.core.clip import CLIPSpec
from clip_inversion.data import PromptDataModule
from clip_inversion.module import CLIPInversion


class CountStep(Callback):
    """Profiles one whole step (batch start to batch end) and counts its operator calls."""

    def __init__(self, step: int) -> None:
        self.step, self.count, self.profiler = step, None, None

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch, batch_idx: int) -> None:
        if batch_idx == self.step:
            self.profiler = profile(activities=[ProfilerActivity.CPU])
            self.profiler.__enter__()

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int) -> None:
        if batch_idx == self.step:
            self.profiler.__exit__(None, None, None)
            self.count = sum(e.count for e in self.profiler.key_averages() if e.key.startswith("aten::"))


def augmentations(path: str) -> list[torch.nn.Module]:
    """The ``model.augmentations`` of a config file, built as the CLI builds them."""
    return build_augmentations(yaml.safe_load(Path(path).read_text())["model"]["augmentations"])


def count(prompts: int, warmup: int = 3, transforms: list[torch.nn.Module] | None = None) -> int:
    """Operator calls of step ``warmup`` of a batch of ``prompts`` prompts (the toy subject, 8 copies)."""
    counter = CountStep(warmup)
    module = CLIPInversion(CLIPSpec("toy-subject"), steps=warmup + 1, init_size=32, augmentations=transforms, tv=0.087)
    trainer = Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
        callbacks=[counter],
    )
    texts = [f"a red circle number {i}" for i in range(prompts)]
    trainer.fit(module, PromptDataModule(texts, batch_size=prompts, steps=warmup + 1))
    return counter.count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--augmentations", help="a config whose model.augmentations to use (default: the reference)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    transforms = augmentations(args.augmentations) if args.augmentations else None
    print(f"ops_per_step={count(args.prompts, args.warmup, transforms)}")


if __name__ == "__main__":
    main()
