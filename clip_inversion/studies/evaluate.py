"""``clip-inversion-evaluate``: inversion runs compared side by side the way the field compares recipes.

``clip-inversion-evaluate RUN [RUN ...] --real DIR`` scores every run directory (its ``manifest.jsonl``) with an
independent judge CLIP and against real images of the same captions, and writes one table, one row a run:

- ``clipsim``: 100 x the judge's mean cosine between each image and its prompt (CLIPSIM, as papers print it);
- ``accuracy``: how often the judge classifies an image as its own prompt among the run's prompts (or
  ``--candidates``), with its 95% Wilson interval;
- ``fid`` and ``kid``: torchmetrics' Frechet and kernel distances between the run's images and the real images of
  its prompts, on the features of ``--features``: the judge's image tower (the offline default) or InceptionV3
  (the literature's, when torch-fidelity and its weights are on the machine); numbers are comparable only with
  numbers computed with the same extractor and real images, and every report says which;
- ``inception_score``: with InceptionV3 features only;
- ``subject_cosine``: the mean cosine under the inverted model, as the run recorded it.

CLIPSIM, FID and KID get 95% normal bootstrap intervals over prompts (the run's prompts and the real images'
captions resampled with replacement, ``--bootstrap`` times, seeded; see :func:`bootstrap_interval`). A real-image
folder is read like a run: a ``manifest.jsonl`` with one ``{"prompt", "image"}`` line an image (``python -m
clip_inversion.toyworld.real`` writes the toy world's). Images are centre-cropped to a square and resized (bicubic)
to the extractor's input.

Writes ``evaluation.csv``, ``evaluation.md`` and TensorBoard logs into ``--out`` (default: the first run's
``report/``), and prints the Markdown. Each image's features are cached in ``OUT/cache/`` under its path,
modification time and size, so an interrupted or repeated evaluation computes only what it has not yet.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from torch import Tensor, nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.inception import InceptionScore
from torchmetrics.image.kid import KernelInceptionDistance
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms.functional import center_crop
from tqdm.auto import tqdm

from clip_inversion.core.clip import CLIPSpec, FrozenCLIP
from clip_inversion.data import read_prompts
from clip_inversion.errors import UsageError, describe_load_error, first_line
from clip_inversion.rundir import MANIFEST, read_records, safe_name
from clip_inversion.studies.experiment import markdown_table
from clip_inversion.studies.metrics import JudgeCosine, ZeroShotAccuracy, as_judge, mean_subject_cosine
from clip_inversion.studies.probes import wilson_interval

# torch-fidelity's InceptionV3 weights, the file its downloader caches under torch.hub.get_dir()/checkpoints.
INCEPTION_WEIGHTS = "weights-inception-2015-12-05-6726825d.pth"

warnings.filterwarnings("ignore", message=r".*will save all extracted features in buffer.*")


@dataclass
class ImageSet:
    """The images of a run directory or of a real-image folder, with the prompt (caption) of each."""

    folder: Path
    paths: list[Path]
    prompts: list[str]
    records: list[dict]

    def groups(self, prompts: Sequence[str] | None = None) -> list[Tensor]:
        """Indices of the images of each distinct prompt (of ``prompts`` only, when given), for the bootstrap."""
        wanted = dict.fromkeys(self.prompts if prompts is None else prompts)
        by_prompt: dict[str, list[int]] = {p: [] for p in wanted}
        for i, p in enumerate(self.prompts):
            if p in by_prompt:
                by_prompt[p].append(i)
        return [torch.tensor(ix) for ix in by_prompt.values() if ix]


def read_image_set(folder: str | Path, what: str) -> ImageSet:
    """Every finished image listed in ``folder/manifest.jsonl`` (withheld ones left out).

    Args:
        what: how the error messages name the folder (``"run"``, ``"--real"``).

    Raises:
        UsageError: the folder does not exist, holds no manifest with images, or misses a listed image.
    """
    folder = Path(folder)
    if not folder.is_dir():
        how = (
            "; write real images of captions with python -m clip_inversion.studies.coco (MS-COCO, see "
            "configs/eval/coco.yaml) or python -m clip_inversion.toyworld.real (the toy world)"
        )
        raise UsageError(f"{what} {folder}: no such directory{how if what == '--real' else ''}")
    records = [r for r in read_records(folder) if r.get("image")]
    if not records or not all(isinstance(r.get("prompt"), str) for r in records):
        raise UsageError(
            f"{what} {folder}: no {MANIFEST} listing images with their prompts (one line an image: "
            '{"prompt": ..., "image": ...}); give a clip-inversion run directory or a folder written by '
            "python -m clip_inversion.toyworld.real"
        )
    paths = [folder / r["image"] for r in records]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise UsageError(f"{what} {folder}: {len(missing)} image(s) in {MANIFEST} are missing, e.g. {missing[0]}")
    return ImageSet(folder, paths, [r["prompt"] for r in records], records)


def load_image(path: Path, size: tuple[int, int]) -> Tensor:
    """An image file as ``(3, H, W)`` in [0, 1] at ``size``: centre-cropped to a square, resized (bicubic).

    Raises:
        UsageError: the file cannot be decoded.
    """
    try:
        image = decode_image(str(path), mode=ImageReadMode.RGB)
    except (RuntimeError, ValueError) as e:
        raise UsageError(f"cannot read image {path}: {first_line(e)}") from e
    image = center_crop(image, [min(image.shape[-2:])] * 2).float()[None] / 255
    if tuple(image.shape[-2:]) != tuple(size):
        shrinking = image.shape[-1] > size[1]
        image = F.interpolate(image, size=size, mode="bicubic", align_corners=False, antialias=shrinking)
    return image[0].clamp(0, 1)


class JudgeFeatures(nn.Module):
    """The judge's image tower: ``(N, 3, H, W)`` in [0, 1] -> ``{"features": (N, D)}`` unit embeddings."""

    def __init__(self, judge: FrozenCLIP, label: str) -> None:
        super().__init__()
        self.judge, self.name, self.size = judge, f"judge {label}", judge.image_size

    @torch.no_grad()
    def forward(self, images: Tensor) -> dict[str, Tensor]:
        return {"features": self.judge.encode_image(images)}


class InceptionFeatures(nn.Module):
    """torch-fidelity's InceptionV3 (FID's reference network), through torchmetrics: ``(N, 3, 299, 299)`` in
    [0, 1] -> ``{"features": (N, 2048) pool features, "logits": (N, 1008) unbiased logits}``."""

    def __init__(self, weights: str | Path | None = None) -> None:
        super().__init__()
        from torchmetrics.image.fid import NoTrainInceptionV3
        from torchmetrics.utilities.imports import _TORCH_FIDELITY_AVAILABLE

        if not _TORCH_FIDELITY_AVAILABLE:
            raise UsageError(
                "--features inception needs torch-fidelity: pip install torch-fidelity (or --features judge)"
            )
        path = Path(weights) if weights else Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_WEIGHTS
        if not path.is_file():
            raise UsageError(
                f"--features inception needs InceptionV3's weights, not found at {path}: download {INCEPTION_WEIGHTS} "
                "(torch-fidelity's release) on a machine with internet and pass --inception-weights PATH, or use "
                "--features judge"
            )
        try:  # torch-fidelity unpickles the file with weights_only=False: let only plain tensors through
            torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises several types for a damaged or malicious file
            raise UsageError(f"--inception-weights {path}: {describe_load_error(e)}") from e
        self.net = NoTrainInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"], str(path))
        self.name, self.size = "InceptionV3 (torch-fidelity)", (299, 299)

    @torch.no_grad()
    def forward(self, images: Tensor) -> dict[str, Tensor]:
        # its forward() returns the first feature only: ask for both at once
        features, logits = self.net._torch_fidelity_forward((images * 255).round().byte())
        return {"features": features.reshape(len(images), -1), "logits": logits}


class FeatureCache:
    """An extractor's outputs for each image, on disk: ``{key: {name: (D,) tensor}}``, where the key names the
    image's absolute path, modification time and size (a rewritten image is computed again)."""

    def __init__(self, path: Path) -> None:
        self.path, self.entries = path, {}
        if path.is_file():
            try:
                self.entries = torch.load(path, map_location="cpu", weights_only=True)
            except Exception:  # a cache cut short or damaged is only lost time: start afresh
                warnings.warn(f"ignoring the damaged feature cache {path}", stacklevel=2)

    @staticmethod
    def key(path: Path) -> str:
        stat = path.stat()
        return f"{path.resolve()}|{stat.st_mtime_ns}|{stat.st_size}"

    def save(self) -> None:
        """Write the cache through a temporary file and a rename."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix="tmp-", suffix=".pt")
        os.close(fd)
        try:
            torch.save(self.entries, tmp)
            os.replace(tmp, self.path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)


def extract(
    images: ImageSet, extractor: nn.Module, cache: FeatureCache, batch_size: int, device: torch.device, desc: str
) -> dict[str, Tensor]:
    """Every image's extractor outputs, ``{name: (N, D)}``, computing only those not in ``cache``.

    The cache is saved at least once a minute and whenever extraction ends or is interrupted.
    """
    keys = [FeatureCache.key(p) for p in images.paths]
    todo = list({k: i for i, k in enumerate(keys) if k not in cache.entries}.values())
    saved = time.monotonic()
    try:
        with tqdm(total=len(todo), desc=desc, unit="image", disable=None if todo else True, leave=False) as bar:
            for start in range(0, len(todo), batch_size):
                chosen = todo[start : start + batch_size]
                batch = torch.stack([load_image(images.paths[i], extractor.size) for i in chosen]).to(device)
                outputs = extractor(batch)
                for j, i in enumerate(chosen):
                    cache.entries[keys[i]] = {name: value[j].float().cpu() for name, value in outputs.items()}
                bar.update(len(chosen))
                if time.monotonic() - saved > 60:
                    cache.save()
                    saved = time.monotonic()
    finally:
        if todo:
            cache.save()
    return {name: torch.stack([cache.entries[k][name] for k in keys]) for name in cache.entries[keys[0]]}


class _Given(nn.Module):
    """Features extracted beforehand (and cached): torchmetrics' feature "extractor" passes them through."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: Tensor) -> Tensor:
        return features


def fid(real: Tensor, fake: Tensor) -> float:
    """torchmetrics' Frechet distance between ``(N, D)`` real and ``(M, D)`` fake features (NaN below 2 each)."""
    if min(len(real), len(fake)) < 2:
        return math.nan
    metric = FrechetInceptionDistance(feature=_Given(real.shape[1])).to(real.device)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    return metric.compute().item()


def kid(real: Tensor, fake: Tensor, subsets: int, seed: int) -> tuple[float, float]:
    """torchmetrics' kernel distance (mean, std over ``subsets`` random subsets of up to 1000 features each)."""
    size = min(len(real), len(fake), 1000)
    if size < 2:
        return math.nan, math.nan
    metric = KernelInceptionDistance(feature=_Given(real.shape[1]), subsets=subsets, subset_size=size)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return mean.item(), std.item()


def inception_score(logits: Tensor, seed: int) -> tuple[float, float]:
    """torchmetrics' Inception Score of ``(N, 1008)`` logits (mean, std over up to 10 splits)."""
    metric = InceptionScore(feature=_Given(logits.shape[1]), splits=max(1, min(10, len(logits) // 2)))
    metric.update(logits)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return mean.item(), std.item()


def bootstrap_interval(
    statistic: Callable[[Tensor, Tensor | None], float],
    estimate: float,
    groups: list[Tensor],
    other_groups: list[Tensor] | None,
    resamples: int,
    seed: int,
) -> tuple[float, float]:
    """95% normal bootstrap interval of ``statistic(indices, other_indices)`` over resampled groups (prompts).

    Each resample draws as many groups as there are, with replacement, from ``groups`` (and independently from
    ``other_groups``, when given) and concatenates their indices; the interval is ``estimate`` +- 1.96 standard
    deviations of the resampled statistic. Not the percentile interval: a resample repeats images, which
    raises FID and KID, so their resampled values lie above the estimate. ``(nan, nan)`` below 2 resamples.
    """
    if resamples < 2:
        return math.nan, math.nan
    generator = torch.Generator().manual_seed(seed)

    def draw(gs: list[Tensor]) -> Tensor:
        return torch.cat([gs[k] for k in torch.randint(len(gs), (len(gs),), generator=generator).tolist()])

    values = []
    for _ in tqdm(range(resamples), desc="bootstrap", leave=False, disable=None):
        values.append(statistic(draw(groups), draw(other_groups) if other_groups else None))
    values = torch.tensor(values, dtype=torch.float64)
    half = 1.959964 * values[values.isfinite()].std().item()
    return estimate - half, estimate + half


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
    caches = {
        m.name: FeatureCache(out / "cache" / f"{safe_name(m.name)}.pt")
        for m in dict.fromkeys([judge_features, extractor])
    }

    def features_of(images: ImageSet, module: nn.Module) -> dict[str, Tensor]:
        desc = f"{module.name}: {images.folder.name}"
        return extract(images, module, caches[module.name], settings.batch_size, device, desc)

    real_features = features_of(real, extractor) if real else None
    rows = []
    for images in sets:
        embeddings = features_of(images, judge_features)["features"]
        row = {"run": str(images.folder), "images": len(images.paths), "prompts": len(set(images.prompts))}
        row.update(_judge_scores(images, embeddings, judge, candidates, settings))
        fake = features_of(images, extractor)
        if real is not None:
            row.update(_distances(images, fake, real, real_features, settings, device))
        if "logits" in fake:
            row["inception_score"], row["inception_score_std"] = inception_score(fake["logits"], settings.seed)
        row["subject_cosine"] = mean_subject_cosine(images.records)
        if settings.expected_images and len(images.paths) != settings.expected_images:
            row["note"] = f"{len(images.paths)} of the protocol's {settings.expected_images} images"
        rows.append(row)
    write_report(rows, out, settings, extractor.name, real)
    return rows


def _judge_scores(
    images: ImageSet, embeddings: Tensor, judge: FrozenCLIP, candidates: list[str] | None, settings: Settings
) -> dict[str, float]:
    """CLIPSIM (100 x the judge's cosine) with its bootstrap interval; zero-shot accuracy with Wilson's."""
    distinct = list(dict.fromkeys(images.prompts))
    device = judge.mean.device
    cosine = JudgeCosine(distinct, judge).to(device)
    accuracy = ZeroShotAccuracy(candidates or distinct, judge).to(device)
    cosine.update(embeddings, images.prompts)
    accuracy.update(embeddings, images.prompts)
    total, count = cosine.total.cpu(), cosine.count.cpu()
    clipsim = 100 * cosine.compute().item()
    prompt_groups = [torch.tensor([k]) for k in range(len(distinct))]
    low, high = bootstrap_interval(
        lambda ix, _: 100 * (total[ix].sum() / count[ix].sum()).item(),
        clipsim,
        prompt_groups,
        None,
        settings.bootstrap,
        settings.seed,
    )
    right, n = int(accuracy.correct[0].sum().item()), int(accuracy.count.sum().item())
    acc_low, acc_high = wilson_interval(right, n)
    return {
        "clipsim": clipsim,
        "clipsim_low": low,
        "clipsim_high": high,
        "accuracy": right / n,
        "accuracy_low": acc_low,
        "accuracy_high": acc_high,
        "candidates": len(accuracy.prompts),
    }


def _distances(
    images: ImageSet,
    fake: dict[str, Tensor],
    real: ImageSet,
    real_features: dict[str, Tensor],
    settings: Settings,
    device: torch.device,
) -> dict[str, float]:
    """FID and KID against the real images of the run's prompts, with bootstrap intervals (computed on
    ``device``: a resample costs one FID and one KID)."""
    mine = torch.cat(real.groups(images.prompts))
    reals, fakes = real_features["features"][mine].to(device), fake["features"].to(device)
    real_groups, fake_groups = real.groups(images.prompts), images.groups()
    # the real groups index the whole real set: renumber them into ``reals``
    position = torch.full((len(real.paths),), -1, dtype=torch.long)
    position[mine] = torch.arange(len(mine))
    real_groups = [position[g] for g in real_groups]
    fid_value = fid(reals, fakes)
    fid_low, fid_high = bootstrap_interval(
        lambda f, r: fid(reals[r], fakes[f]), fid_value, fake_groups, real_groups, settings.bootstrap, settings.seed
    )
    kid_mean, kid_std = kid(reals, fakes, settings.kid_subsets, settings.seed)
    kid_low, kid_high = bootstrap_interval(
        lambda f, r: kid(reals[r], fakes[f], settings.kid_subsets, settings.seed)[0],
        kid_mean,
        fake_groups,
        real_groups,
        settings.bootstrap,
        settings.seed,
    )
    row = {
        "real_images": len(mine),
        "fid": fid_value,
        "fid_low": max(0.0, fid_low),  # a distance: never below 0
        "fid_high": fid_high,
        "kid": kid_mean,
        "kid_std": kid_std,
        "kid_low": kid_low,
        "kid_high": kid_high,
    }
    return row


def _cell(row: dict, key: str, fmt: str) -> str:
    """``value [low, high]`` (or ``value ± std``) for the Markdown table; ``-`` when missing."""
    value = row.get(key)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    text = format(value, fmt)
    if not math.isnan(row.get(f"{key}_low", math.nan)):
        text += f" [{format(row[f'{key}_low'], fmt)}, {format(row[f'{key}_high'], fmt)}]"
    elif f"{key}_std" in row:
        text += f" ± {format(row[f'{key}_std'], fmt)}"
    return text


def write_report(rows: list[dict], out: Path, settings: Settings, extractor: str, real: ImageSet | None) -> Path:
    """Write ``evaluation.csv``, ``evaluation.md`` and TensorBoard logs (``tensorboard/``) into ``out``."""
    from torch.utils.tensorboard import SummaryWriter

    out.mkdir(parents=True, exist_ok=True)
    judge = settings.judge + (f" ({settings.pretrained})" if settings.pretrained else "")
    columns = list(dict.fromkeys(k for row in rows for k in row))
    extra = {"judge": judge, "features": extractor, "bootstrap": settings.bootstrap, "seed": settings.seed}
    with open(out / "evaluation.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=[*columns, *extra])
        writer.writeheader()
        writer.writerows({**row, **extra} for row in rows)
    table = [
        {
            "run": row["run"],
            "images": row["images"],
            "CLIPSIM": _cell(row, "clipsim", ".1f"),
            "accuracy": _cell(row, "accuracy", ".2f"),
            "FID": _cell(row, "fid", ".2f"),
            "KID": _cell(row, "kid", ".4f"),
            **({"IS": _cell(row, "inception_score", ".2f")} if "inception_score" in row else {}),
            "subject cosine": _cell(row, "subject_cosine", ".3f"),
            **({"note": row.get("note", "")} if any("note" in r for r in rows) else {}),
        }
        for row in rows
    ]
    among = f"the {rows[0]['candidates']} of {settings.candidates}" if settings.candidates else "its run's"
    reals = f"{real.folder} ({len(real.paths)} images of {len(set(real.prompts))} captions)" if real else "none"
    text = "\n".join(
        [
            "# Evaluation",
            "",
            f"- judge: {judge}. CLIPSIM: 100 x its cosine between an image and its prompt; accuracy: how often it "
            f"classifies an image as its prompt among {among} prompts",
            f"- FID/KID features: {extractor}. Numbers are comparable only with numbers computed with the same "
            "extractor and real images"
            + (" (the literature's use InceptionV3)." if settings.features == "judge" else "."),
            f"- real images: {reals}; each run is compared with the real images of its own prompts",
            f"- 95% intervals: normal bootstrap over prompts ({settings.bootstrap} resamples, seed {settings.seed}) "
            f"for CLIPSIM, FID and KID; Wilson for accuracy. KID: {settings.kid_subsets} subsets of up to 1000 images.",
            "",
            markdown_table(table),
            "",
        ]
    )
    (out / "evaluation.md").write_text(text, encoding="utf-8")
    with SummaryWriter(str(out / "tensorboard")) as writer:
        writer.add_text("evaluation", text)
        for row in rows:
            for key in ("clipsim", "accuracy", "fid", "kid", "inception_score"):
                if isinstance(row.get(key), float) and not math.isnan(row[key]):
                    writer.add_scalar(f"{safe_name(row['run'])}/{key}", row[key], 0)
    return out


def main(args: list[str] | None = None) -> None:
    """Entry point of ``clip-inversion-evaluate``: prints the Markdown table and where it was written.

    A bad input ends with one line, ``clip-inversion-evaluate: error: ...``, and exit status 2
    (``CLIP_INVERSION_DEBUG=1`` shows the traceback).
    """
    parser = argparse.ArgumentParser(
        prog="clip-inversion-evaluate", description="Compare inversion runs: judge CLIPSIM, accuracy, FID, KID."
    )
    parser.add_argument("runs", nargs="+", help="run directories (each with manifest.jsonl)")
    parser.add_argument("--config", help="YAML file whose keys are these options (e.g. configs/eval/coco.yaml)")
    parser.add_argument("--real", help="folder of real images of the runs' captions, with manifest.jsonl")
    parser.add_argument("--judge", help="judge model name (default: the bundled toy-judge)")
    parser.add_argument("--pretrained", help="the judge's pretrained tag or checkpoint file")
    parser.add_argument("--features", help="FID/KID features: judge (default) or inception")
    parser.add_argument(
        "--inception-weights", help=f"InceptionV3 weights file (default: torch hub's {INCEPTION_WEIGHTS})"
    )
    parser.add_argument("--candidates", help="prompts file to classify among (default: each run's prompts)")
    parser.add_argument("--expected-images", type=int, help="the protocol's images a run (a row that differs says so)")
    parser.add_argument("--bootstrap", type=int, help="bootstrap resamples over prompts (default 100; 0: none)")
    parser.add_argument("--kid-subsets", type=int, help="KID subsets (default 50)")
    parser.add_argument("--seed", type=int, help="seed of the bootstrap and KID subsets (default 0)")
    parser.add_argument("--batch-size", type=int, help="images a forward pass (default 64)")
    parser.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--out", help="report folder (default: the first run's report/)")
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
