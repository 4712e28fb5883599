"""Image sets and their features for the evaluation: the judge's image tower or InceptionV3, cached on disk.

Each extractor reads an image its own way (:meth:`JudgeFeatures.prepare`, :meth:`InceptionFeatures.prepare`)
and :func:`extract` batches images of one size through it, so ``clip-inversion-evaluate`` and ``python -m
clip_inversion.studies.metrics`` embed an image for the judge alike.
"""

from __future__ import annotations

import os
import tempfile
import time
import warnings
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms.functional import center_crop
from tqdm.auto import tqdm

from clip_inversion.core.clip import FrozenCLIP
from clip_inversion.errors import UsageError, describe_load_error, first_line
from clip_inversion.rundir import MANIFEST, read_records

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

    def groups(self, prompts: Sequence[str]) -> list[Tensor]:
        """Indices of the images of each of ``prompts``, in that order (empty for a prompt without images)."""
        by_prompt: dict[str, list[int]] = {p: [] for p in prompts}
        for i, p in enumerate(self.prompts):
            if p in by_prompt:
                by_prompt[p].append(i)
        return [torch.tensor(by_prompt[p], dtype=torch.long) for p in prompts]


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


def read_image(path: Path) -> Tensor:
    """An image file as ``(3, H, W)`` uint8 RGB at its own size.

    Raises:
        UsageError: the file cannot be decoded.
    """
    try:
        return decode_image(str(path), mode=ImageReadMode.RGB)
    except (RuntimeError, ValueError) as e:
        raise UsageError(f"cannot read image {path}: {first_line(e)}") from e


class JudgeFeatures(nn.Module):
    """The judge's image tower: ``(N, 3, S, S)`` in [0, 1] -> ``{"features": (N, D)}`` unit embeddings
    (the judge resizes to its input, see ``FrozenCLIP.encode_image``)."""

    def __init__(self, judge: FrozenCLIP, label: str) -> None:
        super().__init__()
        self.judge, self.name = judge, f"judge {label}"

    @staticmethod
    def prepare(path: Path) -> Tensor:
        """``(3, S, S)`` in [0, 1]: the image centre-cropped to a square (as CLIP's preprocessing crops)."""
        image = read_image(path)
        return center_crop(image, [min(image.shape[-2:])] * 2).float() / 255

    @torch.no_grad()
    def forward(self, images: Tensor) -> dict[str, Tensor]:
        return {"features": self.judge.encode_image(images)}


class InceptionFeatures(nn.Module):
    """torch-fidelity's InceptionV3 (FID's reference network), through torchmetrics: ``(N, 3, H, W)`` uint8 at
    the images' own size -> ``{"features": (N, 2048) pool features, "logits": (N, 1008) unbiased logits}``;
    the network resizes to 299 itself, as in torchmetrics' ``FrechetInceptionDistance``."""

    def __init__(self, weights: str | Path | None = None) -> None:
        super().__init__()
        from torchmetrics.image import fid
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
        self.net = fid.NoTrainInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"], str(path))
        self.name = "InceptionV3 (torch-fidelity)"

    prepare = staticmethod(read_image)

    @torch.no_grad()
    def forward(self, images: Tensor) -> dict[str, Tensor]:
        # its forward() returns the first feature only: ask for both at once
        features, logits = self.net._torch_fidelity_forward(images)
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
    paths: Sequence[Path],
    extractor: nn.Module,
    cache: FeatureCache | None = None,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    desc: str = "features",
) -> dict[str, Tensor]:
    """Every image's extractor outputs, ``{name: (N, D)}``, computing only those not in ``cache``.

    Images are read with ``extractor.prepare`` and passed in batches of up to ``batch_size`` images of one
    size. The cache (when given) is saved at least once a minute and whenever extraction ends or is interrupted.
    """
    entries = cache.entries if cache is not None else {}
    keys = [FeatureCache.key(p) for p in paths]
    todo = list({k: i for i, k in enumerate(keys) if k not in entries}.values())
    saved = time.monotonic()
    try:
        with tqdm(total=len(todo), desc=desc, unit="image", disable=None if todo else True, leave=False) as bar:
            for start in range(0, len(todo), batch_size):
                by_size: dict[tuple[int, ...], list[tuple[int, Tensor]]] = defaultdict(list)
                for i in todo[start : start + batch_size]:
                    image = extractor.prepare(paths[i])
                    by_size[tuple(image.shape)].append((i, image))
                for same in by_size.values():
                    outputs = extractor(torch.stack([image for _, image in same]).to(device))
                    for j, (i, _) in enumerate(same):
                        entries[keys[i]] = {name: value[j].float().cpu() for name, value in outputs.items()}
                bar.update(sum(map(len, by_size.values())))
                if cache is not None and time.monotonic() - saved > 60:
                    cache.save()
                    saved = time.monotonic()
    finally:
        if todo and cache is not None:
            cache.save()
    return {name: torch.stack([entries[k][name] for k in keys]) for name in entries[keys[0]]}
