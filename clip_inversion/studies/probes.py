"""Attribute probes: which class of a named attribute a judge sees in inverted images, with 95% intervals.

An attribute set is a YAML file naming classes, each described by one or more prompts
(``configs/attributes/gender.yaml``, ``nsfw.yaml``, ``colour.yaml``)::

    name: gender
    classes:
      man: [a photo of a man]
      woman: [a photo of a woman]

An image belongs to the class of the prompt the judge finds closest among all classes' prompts. A probe
reports, for each inverted prompt and for all images together, the proportion of images in each class with
a Wilson score interval; images of one prompt are its seeds, so the intervals are over prompts x seeds.
:func:`compare` sets each model against a control model (Newcombe intervals of the differences).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from torch import Tensor

from clip_inversion.core.clip import CLIPSpec, FrozenCLIP
from clip_inversion.studies.metrics import as_judge


@dataclass
class AttributeSet:
    """Named classes of one attribute, each described by prompts.

    Args:
        name: the attribute (``gender``).
        classes: ``{class: [prompt, ...]}``, at least two classes.
    """

    name: str
    classes: dict[str, list[str]]

    def __post_init__(self) -> None:
        self.classes = {str(k): [v] if isinstance(v, str) else list(v) for k, v in self.classes.items()}
        if len(self.classes) < 2 or not all(self.classes.values()):
            raise ValueError(f"attribute set {self.name!r} needs at least two classes, each with a prompt")

    @classmethod
    def from_yaml(cls, path: str | Path) -> AttributeSet:
        """Read an attribute set from a YAML file with ``name`` and ``classes``."""
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        return cls(data.get("name", Path(path).stem), data.get("classes") or {})

    @property
    def chance(self) -> float:
        """The proportion of each class if the judge picked classes uniformly at random."""
        return 1 / len(self.classes)


def wilson_interval(count: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion ``count / n`` (95% for the default ``z``)."""
    if n == 0:
        return 0.0, 1.0
    p = count / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe_interval(count: int, n: int, control_count: int, control_n: int) -> tuple[float, float]:
    """95% interval of the difference ``count / n - control_count / control_n`` (Newcombe's hybrid score
    interval, built from the two Wilson intervals)."""
    p, q = count / n, control_count / control_n
    (p_low, p_high), (q_low, q_high) = wilson_interval(count, n), wilson_interval(control_count, control_n)
    d = p - q
    return d - math.sqrt((p - p_low) ** 2 + (q_high - q) ** 2), d + math.sqrt((p_high - p) ** 2 + (q - q_low) ** 2)


def compare(rows: list[dict[str, object]], control: str) -> list[dict[str, object]]:
    """Each model's proportions against a control model's, prompt by prompt and class by class.

    Args:
        rows: :func:`proportions` rows of several models (their ``model`` column).
        control: the ``model`` the others are compared with (the same recipe without the effect studied).

    Returns:
        One row a (model, prompt, attribute, class): both proportions, their ``difference`` with its 95%
        Newcombe interval ``low``/``high``, and ``differs`` (the interval excludes 0).
    """
    controls = {(r["prompt"], r["attribute"], r["class"]): r for r in rows if r["model"] == control}
    out = []
    for r in rows:
        c = controls.get((r["prompt"], r["attribute"], r["class"]))
        if r["model"] == control or c is None or not r["images"] or not c["images"]:
            continue
        low, high = newcombe_interval(r["count"], r["images"], c["count"], c["images"])
        out.append(
            {
                "model": r["model"],
                "control": control,
                "prompt": r["prompt"],
                "attribute": r["attribute"],
                "class": r["class"],
                "proportion": r["proportion"],
                "control_proportion": c["proportion"],
                "difference": round(r["count"] / r["images"] - c["count"] / c["images"], 4),
                "low": round(low, 4),
                "high": round(high, 4),
                "differs": low > 0 or high < 0,
            }
        )
    return out


@torch.no_grad()
def classify(images: Tensor, attributes: AttributeSet, judge: FrozenCLIP | CLIPSpec | str | None = None) -> Tensor:
    """``(N,)`` class index (in ``attributes.classes`` order) of each ``(N, 3, H, W)`` image in [0, 1]."""
    judge = as_judge(judge)
    prompts = [p for ps in attributes.classes.values() for p in ps]
    owner = torch.tensor([i for i, ps in enumerate(attributes.classes.values()) for _ in ps])
    similarity = judge.encode_image(images.to(judge.mean.device)) @ judge.encode_text(prompts).T
    return owner[similarity.argmax(dim=1).cpu()]


def proportions(
    classes: Tensor, prompts: Sequence[str], attributes: AttributeSet, label: str = ""
) -> list[dict[str, object]]:
    """Proportion of each class per prompt and over all images, with 95% Wilson intervals.

    Args:
        classes: ``(N,)`` class index of each image (from :func:`classify`).
        prompts: ``N`` prompts the images were inverted from (a prompt repeats once per seed).
        attributes: the attribute set.
        label: a value for the rows' ``model`` column.

    Returns:
        One row a (prompt or ``"all"``, class): ``model``, ``prompt``, ``attribute``, ``class``, ``count``,
        ``images``, ``proportion``, ``low``, ``high``, ``chance`` and ``above_chance`` (the interval lies above
        chance).
    """
    groups = {p: [i for i, q in enumerate(prompts) if q == p] for p in dict.fromkeys(prompts)}
    groups["all"] = list(range(len(prompts)))
    rows = []
    for prompt, members in groups.items():
        for k, name in enumerate(attributes.classes):
            count, n = int((classes[members] == k).sum()), len(members)
            low, high = wilson_interval(count, n)
            rows.append(
                {
                    "model": label,
                    "prompt": prompt,
                    "attribute": attributes.name,
                    "class": name,
                    "count": count,
                    "images": n,
                    "proportion": round(count / n, 4) if n else float("nan"),
                    "low": round(low, 4),
                    "high": round(high, 4),
                    "chance": round(attributes.chance, 4),
                    "above_chance": low > attributes.chance,
                }
            )
    return rows


def probe(
    images: Tensor,
    prompts: Sequence[str],
    attributes: AttributeSet,
    judge: FrozenCLIP | CLIPSpec | str | None = None,
    label: str = "",
) -> list[dict[str, object]]:
    """:func:`classify` then :func:`proportions`: ``images`` ``(N, 3, H, W)`` in [0, 1], one prompt each."""
    return proportions(classify(images, attributes, judge), prompts, attributes, label)


def probe_run(
    run_dir: str | Path, attributes: AttributeSet, judge: FrozenCLIP | CLIPSpec | str | None = None, label: str = ""
) -> list[dict[str, object]]:
    """:func:`probe` every image of a finished run's ``manifest.jsonl``."""
    from clip_inversion.rundir import read_manifest

    inversions = read_manifest(run_dir)
    if not inversions:
        raise ValueError(f"{run_dir}: no finished image in manifest.jsonl")
    images = torch.stack([inv.image for inv in inversions])
    return probe(images, [inv.prompt for inv in inversions], attributes, judge, label)
