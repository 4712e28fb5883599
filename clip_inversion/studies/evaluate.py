"""``clip-inversion-evaluate``: inversion runs compared side by side the way the field compares recipes.

``clip-inversion-evaluate RUN [RUN ...] --real DIR`` scores every run directory (its ``manifest.jsonl``) with an
independent judge CLIP and against real images of the same captions, and writes one table, one row a run:

- ``clipsim``: 100 x the judge's mean cosine between each image and its prompt (CLIPSIM, as papers print it);
- ``accuracy``: how often the judge classifies an image as its own prompt among the run's prompts (or
  ``--candidates``; ``candidates`` says how many);
- ``fid`` and ``kid``: torchmetrics' Frechet and kernel distances between the run's images of the prompts that
  have real images and the real images of those prompts (``compared_prompts``, ``compared_images``,
  ``real_images``), on the features of ``--features``: the judge's image tower (the offline default) or
  InceptionV3 (the literature's, when torch-fidelity and its weights are on the machine); numbers are
  comparable only with numbers computed with the same extractor and real images, and every report says which;
- ``inception_score``: with InceptionV3 features only;
- ``subject_cosine``: the mean cosine under the inverted model, as the run recorded it.

95% intervals come from one bootstrap over prompts (see :mod:`clip_inversion.studies.statistics`): CLIPSIM and
accuracy resample the run's prompts, FID and KID the compared prompts with both sides' images of each drawn
prompt. A real-image folder is read like a run: a ``manifest.jsonl`` with one ``{"prompt", "image"}`` line an
image (``python -m clip_inversion.toyworld.real`` writes the toy world's).

Writes ``evaluation.csv``, ``evaluation.md`` and TensorBoard logs into ``--out`` (default: the first run's
``report/``), and prints the Markdown. Each image's features are cached in ``OUT/cache/`` under its path,
modification time and size, so an interrupted or repeated evaluation computes only what it has not yet.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from torch import Tensor, nn

from clip_inversion.core.clip import CLIPSpec, FrozenCLIP
from clip_inversion.data import read_prompts
from clip_inversion.errors import UsageError, first_line
from clip_inversion.rundir import safe_name
from clip_inversion.studies.evaluation_report import write_report
from clip_inversion.studies.features import (
    FeatureCache,
    ImageSet,
    InceptionFeatures,
    JudgeFeatures,
    extract,
    read_image_set,
)
from clip_inversion.studies.metrics import as_judge, mean_subject_cosine
from clip_inversion.studies.run_scores import distances, judge_scores
from clip_inversion.studies.statistics import inception_score
from clip_inversion.usage import evaluate_parser


@dataclass
class Settings:
    """How runs are evaluated (the command line's options; see :func:`main`)."""

    real: str | None = None
    judge: str = "toy-judge"
    pretrained: str | None = None
    features: str = "judge"
    inception_weights: str | None = None
    candidates: str | None = None
    expected_images: int | None = None
    bootstrap: int = 100
    kid_subsets: int = 50
    seed: int = 0
    batch_size: int = 64
    device: str | None = None
    out: str | None = None

    def __post_init__(self) -> None:
        if self.features not in ("judge", "inception"):
            raise UsageError(f"--features must be judge or inception, not {self.features!r}")
        for name in ("bootstrap", "kid_subsets", "batch_size"):
            if getattr(self, name) < (0 if name == "bootstrap" else 1):
                raise UsageError(f"--{name.replace('_', '-')} must be at least {int(name != 'bootstrap')}")
        if self.device and self.device.startswith("cuda") and not torch.cuda.is_available():
            raise UsageError(f"--device {self.device}: no CUDA device here; use --device cpu")


def report_dir(runs: Sequence[str | Path], settings: Settings) -> Path:
    """Where the report goes: ``settings.out``, else the first run's ``report/``."""
    return Path(settings.out) if settings.out else Path(runs[0]) / "report"


def evaluate(runs: Sequence[str | Path], settings: Settings, judge: FrozenCLIP | None = None) -> list[dict]:
    """Evaluate runs side by side and write the report; one row of scores a run, in the order given.

    Args:
        runs: run directories (each with ``manifest.jsonl``).
        settings: the options; ``settings.out`` defaults to the first run's ``report/``.
        judge: an already loaded judge (default: load ``settings.judge`` + ``settings.pretrained``).

    Raises:
        UsageError: a bad run directory, real-image folder, candidates file or extractor; one line each.
    """
    if not runs:
        raise UsageError("no run directory given")
    sets = [read_image_set(run, "run") for run in runs]  # every input checked before any model loads
    real = read_image_set(settings.real, "--real") if settings.real else None
    candidates = [p.text for p in read_prompts(settings.candidates)] if settings.candidates else None
    for images in sets:
        outside = [p for p in dict.fromkeys(images.prompts) if candidates is not None and p not in candidates]
        if outside:
            raise UsageError(
                f"run {images.folder}: prompt {outside[0]!r} is not among --candidates {settings.candidates}"
            )
        if real is not None and not set(images.prompts) & set(real.prompts):
            raise UsageError(
                f"--real {settings.real}: none of its captions is a prompt of run {images.folder}; give real images "
                "of the run's captions (python -m clip_inversion.toyworld.real OUT --captions PROMPTS)"
            )
    out = report_dir(runs, settings)
    try:
        out.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=out).close()
    except OSError as e:
        raise UsageError(f"cannot write {out} ({e.strerror}): choose another report folder with --out") from e
    inception = InceptionFeatures(settings.inception_weights) if settings.features == "inception" else None
    device = torch.device(settings.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    spec = CLIPSpec(settings.judge, settings.pretrained)
    judge = (judge or as_judge(spec)).to(device)
    judge_features = JudgeFeatures(judge, spec.label)
    extractor = (judge_features if inception is None else inception).to(device)
    caches = {  # "-2": the features of images as read by ``prepare`` (a cache of another reading is not reused)
        m.name: FeatureCache(out / "cache" / f"{safe_name(m.name)}-2.pt")
        for m in dict.fromkeys([judge_features, extractor])
    }

    def features_of(images: ImageSet, module: nn.Module) -> dict[str, Tensor]:
        desc = f"{module.name}: {images.folder.name}"
        return extract(images.paths, module, caches[module.name], settings.batch_size, device, desc)

    real_features = features_of(real, extractor) if real else None
    rows = []
    for images in sets:
        embeddings = features_of(images, judge_features)["features"]
        row = {"run": str(images.folder), "images": len(images.paths), "prompts": len(set(images.prompts))}
        row.update(judge_scores(images, embeddings, judge, candidates, settings.bootstrap, settings.seed))
        fake = features_of(images, extractor)
        if real is not None:
            fakes, reals = fake["features"].to(device), real_features["features"].to(device)
            row.update(distances(images, fakes, real, reals, settings.kid_subsets, settings.bootstrap, settings.seed))
        if "logits" in fake:
            row["inception_score"], row["inception_score_std"] = inception_score(fake["logits"], settings.seed)
        row["subject_cosine"] = mean_subject_cosine(images.records)
        if settings.expected_images and len(images.paths) != settings.expected_images:
            row["note"] = f"{len(images.paths)} of the protocol's {settings.expected_images} images"
        rows.append(row)
    write_report(rows, out, settings, extractor.name, real)
    return rows


def main(args: list[str] | None = None) -> None:
    """Entry point of ``clip-inversion-evaluate``: prints the Markdown table and where it was written.

    A bad input ends with one line, ``clip-inversion-evaluate: error: ...``, and exit status 2
    (``CLIP_INVERSION_DEBUG=1`` shows the traceback).
    """
    parser = evaluate_parser()
    ns = parser.parse_args(args)
    try:
        options = {}
        if ns.config:
            try:
                options = yaml.safe_load(Path(ns.config).read_text(encoding="utf-8")) or {}
            except (OSError, yaml.YAMLError) as e:
                raise UsageError(f"--config {ns.config}: {first_line(e)}") from e
            unknown = set(options) - set(Settings.__dataclass_fields__)
            if unknown:
                raise UsageError(f"--config {ns.config}: unknown key(s) {sorted(unknown)}")
        given = {k: v for k, v in vars(ns).items() if v is not None and k not in ("runs", "config")}
        settings = Settings(**{**options, **given})
        rows = evaluate(ns.runs, settings)
    except UsageError as e:
        if os.environ.get("CLIP_INVERSION_DEBUG"):
            raise
        parser.exit(2, f"{parser.prog}: error: {' '.join(str(e).split())}\n")
    out = report_dir(ns.runs, settings)
    print((out / "evaluation.md").read_text(encoding="utf-8"))
    print(f"written: {out / 'evaluation.csv'}, {out / 'evaluation.md'}, {out / 'tensorboard'} (rows: {len(rows)})")


if __name__ == "__main__":
    main()
