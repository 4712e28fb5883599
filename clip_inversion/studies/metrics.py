"""Independent scores of inverted images as torchmetrics ``Metric``s, computed by a judge CLIP.

A judge is any CLIP that was not inverted (the bundled ``toy-judge`` by default). Both metrics index their
images by a fixed list of prompts given once, keep per-prompt sums (synchronised across processes by
summing) and report per prompt and aggregated:

- :class:`JudgeCosine`: the judge's cosine between each image and its own prompt;
- :class:`ZeroShotAccuracy`: whether the judge classifies each image as its own prompt among all of them,
  optionally also at a coarser level (the colour of "a red star" among all colour-shape captions).

``python -m clip_inversion.studies.metrics RUN_DIR`` scores a finished run directory (see :func:`score_run`).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from torch import Tensor
from torchmetrics import Metric

from clip_inversion.core.clip import CLIPSpec, FrozenCLIP, load_clip
from clip_inversion.core.targets import Term, encode_target, encode_targets, parse_target
from clip_inversion.data import read_prompts
from clip_inversion.studies.features import JudgeFeatures, extract, read_image_set


def as_judge(judge: FrozenCLIP | CLIPSpec | str | None) -> FrozenCLIP:
    """A loaded judge from a model, a spec or a model name (``None``: the bundled ``toy-judge``)."""
    if isinstance(judge, FrozenCLIP):
        return judge
    if judge is None or isinstance(judge, str):
        judge = CLIPSpec(judge or "toy-judge")
    return load_clip(judge)


class _PerPrompt(Metric):
    """Per-prompt sums over a fixed prompt list, and the judge's unit text embeddings of those prompts."""

    full_state_update = False

    def __init__(self, prompts: Sequence[str], judge: FrozenCLIP | CLIPSpec | str | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        if not prompts:
            raise ValueError("a judge metric needs at least one prompt")
        self.prompts = list(prompts)
        self.judge = as_judge(judge)
        # (K, D): a composite prompt ("a red circle | a star:0.5") is the judge's own encoding of that target
        self.register_buffer("text", encode_targets(self.judge, self.prompts), persistent=False)
        self.add_state("count", torch.zeros(len(self.prompts)), dist_reduce_fx="sum")

    def _embed(self, images: Tensor) -> Tensor:
        if images.dim() == 2:  # (N, D): the judge's unit image embeddings, already computed
            return images.to(self.text.device, torch.float32)
        with torch.no_grad():
            return self.judge.encode_image(images.to(self.text.device, torch.float32))

    def _targets(self, targets: Tensor | Sequence[str]) -> Tensor:
        if not isinstance(targets, Tensor):
            targets = torch.tensor([self.prompts.index(t) for t in targets])
        return targets.to(self.count.device, torch.long)


class JudgeCosine(_PerPrompt):
    """The judge's cosine between images and their prompts.

    Args:
        prompts: the ``K`` prompts the images were inverted from.
        judge: the judge: a loaded model, a spec, or a model name (default: ``toy-judge``).

    ``update(images, targets)``: ``images`` ``(N, 3, H, W)`` in [0, 1] (or ``(N, D)``, the judge's unit image
    embeddings of them); ``targets`` ``(N,)`` prompt indices or
    the prompts themselves. ``compute()``: the mean cosine over all images, a scalar in [-1, 1];
    :meth:`per_prompt`: ``(K,)`` mean cosine of each prompt's images (NaN for a prompt with none).
    """

    def __init__(self, prompts: Sequence[str], judge: FrozenCLIP | CLIPSpec | str | None = None, **kwargs) -> None:
        super().__init__(prompts, judge, **kwargs)
        self.add_state("total", torch.zeros(len(self.prompts)), dist_reduce_fx="sum")

    def update(self, images: Tensor, targets: Tensor | Sequence[str]) -> None:
        targets = self._targets(targets)
        cosine = (self._embed(images) * self.text[targets]).sum(dim=1)
        self.total.index_add_(0, targets, cosine.to(self.total))
        self.count.index_add_(0, targets, torch.ones_like(cosine).to(self.count))

    def compute(self) -> Tensor:
        return self.total.sum() / self.count.sum()

    def per_prompt(self) -> Tensor:
        """``(K,)`` mean cosine of each prompt's images (synchronised like ``compute``)."""
        with self.sync_context():
            return self.total / self.count


class ZeroShotAccuracy(_PerPrompt):
    """How often the judge classifies an image as its own prompt among all ``K`` prompts.

    Args:
        prompts: the ``K`` candidate prompts (class names), among which each image is classified.
        judge: the judge: a loaded model, a spec, or a model name (default: ``toy-judge``).
        levels: optional coarser labels of the candidates, ``{name: [label of prompt k for k < K]}``; an image
            is right at level ``name`` when the predicted prompt's label equals its own prompt's label (for
            the toy world: ``{"colour": [...], "shape": [...]}``). The level ``"prompt"`` (exact) is always
            reported.

    ``update(images, targets)`` as for :class:`JudgeCosine`. ``compute()``: ``{level: accuracy}``, scalars in
    [0, 1] over all images; :meth:`per_prompt`: ``{level: (K,)}`` accuracy of each prompt's images.
    """

    def __init__(
        self,
        prompts: Sequence[str],
        judge: FrozenCLIP | CLIPSpec | str | None = None,
        levels: dict[str, Sequence[object]] | None = None,
        **kwargs,
    ) -> None:
        super().__init__(prompts, judge, **kwargs)
        levels = dict(levels or {})
        for name, labels in levels.items():
            if len(labels) != len(self.prompts):
                raise ValueError(f"level {name!r} has {len(labels)} labels for {len(self.prompts)} prompts")
        self.levels = ["prompt", *(name for name in levels if name != "prompt")]
        codes = [list(range(len(self.prompts)))]
        codes += [[sorted(set(map(str, levels[n]))).index(str(v)) for v in levels[n]] for n in self.levels[1:]]
        self.register_buffer("codes", torch.tensor(codes), persistent=False)  # (L, K) label index per level
        self.add_state("correct", torch.zeros(len(self.levels), len(self.prompts)), dist_reduce_fx="sum")

    def predict(self, images: Tensor) -> Tensor:
        """``(N,)`` index of the prompt the judge finds closest to each ``(N, 3, H, W)`` image."""
        return (self._embed(images) @ self.text.T).argmax(dim=1)

    def update(self, images: Tensor, targets: Tensor | Sequence[str]) -> None:
        targets = self._targets(targets)
        predicted = self.predict(images).to(targets.device)
        right = (self.codes[:, predicted] == self.codes[:, targets]).to(self.correct)  # (L, N)
        self.correct.index_add_(1, targets, right)
        self.count.index_add_(0, targets, torch.ones_like(targets, dtype=self.count.dtype))

    def compute(self) -> dict[str, Tensor]:
        total = self.correct.sum(dim=1) / self.count.sum()
        return dict(zip(self.levels, total))

    def per_prompt(self) -> dict[str, Tensor]:
        """``{level: (K,)}`` accuracy of each prompt's images (NaN for a prompt with none)."""
        with self.sync_context():
            return dict(zip(self.levels, self.correct / self.count))


def score_images(
    images: Tensor,
    prompts: Sequence[str],
    judge: FrozenCLIP | CLIPSpec | str | None = None,
    candidates: Sequence[str] | None = None,
) -> dict[str, object]:
    """Score images inverted from ``prompts`` with a judge: cosine and zero-shot accuracy.

    Args:
        images: ``(N, 3, H, W)`` in [0, 1].
        prompts: ``N`` prompts, one an image (repeats allowed: several seeds of one prompt).
        judge: the judge (default: ``toy-judge``).
        candidates: the prompts to classify among (default: the distinct ``prompts``); must hold every prompt
            (``ValueError`` otherwise).

    Returns:
        ``judge_cosine`` and ``judge_accuracy`` (aggregated floats), ``judge_among`` (how many candidates the
        accuracy chooses among), and ``per_prompt``: ``{prompt: {"images", "judge_cosine", "judge_accuracy"}}``.
    """
    judge = as_judge(judge)
    distinct = list(dict.fromkeys(prompts))
    candidates = list(candidates or distinct)
    missing = [p for p in distinct if p not in candidates]
    if missing:
        raise ValueError(f"prompts not among the candidates, so never right: {missing[:3]}")
    cosine, accuracy = JudgeCosine(distinct, judge), ZeroShotAccuracy(candidates, judge)
    cosine.update(images, prompts)
    accuracy.update(images, prompts)
    cosines, right, counts = cosine.per_prompt(), accuracy.per_prompt()["prompt"], accuracy.count
    return {
        "judge_cosine": cosine.compute().item(),
        "judge_accuracy": accuracy.compute()["prompt"].item(),
        "judge_among": len(candidates),
        "per_prompt": {
            p: {
                "images": int(counts[candidates.index(p)]),
                "judge_cosine": cosines[i].item(),
                "judge_accuracy": right[candidates.index(p)].item(),
            }
            for i, p in enumerate(distinct)
        },
    }


def component_scores(images: Tensor, target: str, judge: FrozenCLIP | CLIPSpec | str | None = None) -> list[dict]:
    """How a judge reads images inverted from a composite target: each term's share of the blend.

    Args:
        images: ``(N, 3, H, W)`` in [0, 1], all inverted from ``target``.
        target: a target string such as ``"a red circle | a blue square:0.5"`` (see ``targets.py``).
        judge: the judge (default: ``toy-judge``).

    Returns:
        One row a term, in the target's order: ``term``, ``weight``, ``judge_cosine`` (the mean cosine of the
        images to the term alone) and ``closest`` (the share of images closer to this term than to any other
        positive term; ``None`` for negative terms).
    """
    judge = as_judge(judge)
    terms = parse_target(target)
    with torch.no_grad():
        text = torch.stack([encode_target(judge, [Term(t.kind, t.value)]) for t in terms])  # (T, D)
        cosine = judge.encode_image(images.to(text.device, torch.float32)) @ text.T  # (N, T)
    positive = torch.tensor([t.weight > 0 for t in terms], device=cosine.device)
    closest = cosine.masked_fill(~positive, float("-inf")).argmax(dim=1)
    return [
        {
            "term": t.value,
            "weight": t.weight,
            "judge_cosine": cosine[:, k].mean().item(),
            "closest": (closest == k).float().mean().item() if t.weight > 0 else None,
        }
        for k, t in enumerate(terms)
    ]


def mean_subject_cosine(records: Iterable[dict]) -> float:
    """Mean cosine under the inverted model, as manifest records give it; a prompt stopped by a non-finite
    loss may have none (``null``) and is left out. NaN when no record has one."""
    values = [r["cosine"] for r in records if r.get("cosine") is not None]
    return sum(values) / len(values) if values else float("nan")


def score_run(
    run_dir: str | Path,
    judge: FrozenCLIP | CLIPSpec | str | None = None,
    candidates: Sequence[str] | None = None,
) -> dict[str, object]:
    """:func:`score_images` for every image of a finished run's ``manifest.jsonl``, plus ``subject_cosine``
    (the mean cosine under the inverted model, as recorded) and ``images``.

    Images are read and embedded as ``clip-inversion-evaluate`` reads them (``features.JudgeFeatures``), so both
    give the same cosine for the same images.

    Raises:
        ValueError: the directory holds no finished image (a ``UsageError``, with its reason).
    """
    judge = as_judge(judge)
    images = read_image_set(run_dir, "run")
    embeddings = extract(images.paths, JudgeFeatures(judge, ""), device=judge.mean.device)["features"]
    scores = score_images(embeddings, images.prompts, judge, candidates)
    scores["subject_cosine"] = mean_subject_cosine(images.records)
    scores["images"] = len(images.paths)
    return scores


def main(args: list[str] | None = None) -> None:
    """``python -m clip_inversion.studies.metrics RUN_DIR [--judge NAME] [--candidates FILE]``: print the scores
    as JSON (``judge_among``: how many prompts the accuracy chooses among)."""
    parser = argparse.ArgumentParser(description="Score a finished inversion run with a judge CLIP.")
    parser.add_argument("run_dir", help="directory holding manifest.jsonl")
    parser.add_argument("--judge", default="toy-judge", help="judge model name (default: the bundled toy-judge)")
    parser.add_argument("--pretrained", default=None, help="the judge's pretrained tag or checkpoint file")
    parser.add_argument("--candidates", default=None, help="prompts file to classify among (.txt, .jsonl, .csv)")
    ns = parser.parse_args(args)
    candidates = [p.text for p in read_prompts(ns.candidates)] if ns.candidates else None
    try:
        scores = score_run(ns.run_dir, CLIPSpec(ns.judge, ns.pretrained), candidates)
    except ValueError as e:
        parser.error(str(e))
    print(json.dumps(scores, indent=2))


if __name__ == "__main__":
    main()
