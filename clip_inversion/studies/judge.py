"""The judge callback: an independent CLIP scores the images while they form, logged to TensorBoard."""

from __future__ import annotations

import math
from typing import Any

import torch
from lightning import Callback, LightningModule, Trainer

from clip_inversion.callbacks import pending_indices
from clip_inversion.core.clip import CLIPSpec, load_clip
from clip_inversion.data import PromptBatch
from clip_inversion.rundir import image_stem
from clip_inversion.strategy import gather_objects
from clip_inversion.studies.metrics import JudgeCosine, ZeroShotAccuracy


class JudgeScores(Callback):
    """Score the images with an independent judge CLIP while they form, and log the scores to TensorBoard.

    Every ``every_n_steps`` steps and at each batch's last step, each prompt's ``judge/cosine/<id>_<prompt>``
    (the judge's cosine to its prompt) and ``judge/correct/<id>_<prompt>`` (1 when the judge classifies the
    image as its prompt among the candidates, else 0); after each batch's last step, the running aggregates
    over every prompt finished so far in this session: ``judge/cosine`` and ``judge/accuracy``, with
    ``judge/among``, the number of candidates the accuracy chooses among.

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
        self.scores: dict[str, float] = {}  # the session's judge/cosine and judge/accuracy so far: the HParams tab's

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
        pending = pending_indices(batch)
        with torch.no_grad():
            images = pl_module.inverter.image().detach().float()[pending]
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
                among = float(len(self.run_accuracy.prompts))
                self.scores = dict(zip(("judge/cosine", "judge/accuracy", "judge/among"), (*aggregate, among)))
        experiment = getattr(trainer.logger, "experiment", None)
        if not trainer.is_global_zero or not hasattr(experiment, "add_scalar"):
            return
        for stem, cosine_value, correct_value in everyone:
            experiment.add_scalar(f"judge/cosine/{stem}", cosine_value, trainer.global_step)
            experiment.add_scalar(f"judge/correct/{stem}", correct_value, trainer.global_step)
        if aggregate is not None and not any(math.isnan(v) for v in aggregate):
            experiment.add_scalar("judge/cosine", aggregate[0], trainer.global_step)
            experiment.add_scalar("judge/accuracy", aggregate[1], trainer.global_step)
            experiment.add_scalar("judge/among", len(self.run_accuracy.prompts), trainer.global_step)
