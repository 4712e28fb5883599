"""The evaluation's statistics: FID, KID and IS of extracted features, and 95% intervals over prompts.

A run's images and the real images are paired by prompt, so the bootstrap resamples prompts, not images
(:func:`resample_prompts`): each resample draws as many prompts as there are, with replacement, and takes
every image of the drawn prompts, generated and real alike (:func:`take`). A prompt's several seeds thus move
together, and a resample compares generated and real images of the same prompts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.inception import InceptionScore
from torchmetrics.image.kid import KernelInceptionDistance

from clip_inversion.studies.probes import wilson_interval

Z95 = 1.959964
KID_MAX_SUBSET = 1000  # the subset size of Binkowski et al.
KID_MIN_SUBSET = 50  # below it the report warns that KID is noisy


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


def kid_subset_size(n_real: int, n_fake: int) -> int:
    """KID's subset size: half the smaller set, so that subsets differ and their std means something; at most
    1000."""
    return min(KID_MAX_SUBSET, min(n_real, n_fake) // 2)


def kid(real: Tensor, fake: Tensor, subsets: int, seed: int) -> tuple[float, float]:
    """torchmetrics' kernel distance of ``(N, D)`` real and ``(M, D)`` fake features: mean and std over
    ``subsets`` random subsets of :func:`kid_subset_size` images a side (NaN below 2 images a subset)."""
    size = kid_subset_size(len(real), len(fake))
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


def small_sample_warning(n_real: int, n_fake: int, dims: int) -> str | None:
    """One line when FID or KID can say little at these sizes (``None`` when both can)."""
    problems = []
    if min(n_real, n_fake) <= dims:
        problems.append(
            f"FID on {n_fake} generated and {n_real} real images of {dims}-dimensional features: fewer images than "
            "dimensions, so its covariances are singular and it measures the sample size as much as the images"
        )
    size = kid_subset_size(n_real, n_fake)
    if size < KID_MIN_SUBSET:
        problems.append(f"KID on subsets of {size} images (under {KID_MIN_SUBSET}): noisy, see its std")
    return "; ".join(problems) or None


def resample_prompts(prompts: int, resamples: int, seed: int) -> Tensor:
    """``(resamples, prompts)`` prompt indices drawn with replacement, seeded."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(prompts, (resamples, prompts), generator=generator)


def take(groups: Sequence[Tensor], drawn: Tensor) -> Tensor:
    """The image indices of the drawn prompts: ``groups[k]`` for each ``k`` in ``drawn``, concatenated."""
    return torch.cat([groups[k] for k in drawn.tolist()])


def normal_interval(estimate: float, values: Tensor) -> tuple[float, float]:
    """``estimate`` +- 1.96 standard deviations of the finite resampled ``values`` (NaN below 2).

    For FID and KID: a resample repeats images, which shrinks the feature covariance and raises both, so their
    resampled values lie above the estimate and a percentile interval can miss it.
    """
    finite = values[values.isfinite()].double()
    if len(finite) < 2:
        return math.nan, math.nan
    half = Z95 * finite.std().item()
    return estimate - half, estimate + half


def percentile_interval(values: Tensor) -> tuple[float, float]:
    """The 2.5th and 97.5th percentiles of the resampled ``values`` (NaN below 2), for means of images."""
    if len(values) < 2:
        return math.nan, math.nan
    low, high = torch.quantile(values.double(), torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    return low, high


def prompt_ratio(numerators: Tensor, counts: Tensor, drawn: Tensor) -> Tensor:
    """``(R,)`` ratio of sums over each resample's drawn prompts, from ``(K,)`` per-prompt sums and image counts
    and ``(R, K)`` drawn prompt indices: the mean over the drawn prompts' images."""
    return numerators[drawn].sum(dim=1) / counts[drawn].sum(dim=1)


def accuracy_interval(right: Tensor, counts: Tensor, drawn: Tensor) -> tuple[float, float]:
    """95% interval of the share of right images, prompts resampled as clusters.

    Args:
        right: ``(K,)`` right images of each prompt.
        counts: ``(K,)`` images of each prompt.
        drawn: ``(R, K)`` resampled prompt indices (``R`` may be 0).

    The percentile interval of the resampled shares; when they do not vary (every prompt's share alike, as
    when all are right, or no resample), Wilson's interval with the prompts as the trials, so that a prompt's
    several images never count as independent evidence.
    """
    values = prompt_ratio(right, counts, drawn)
    if len(values) >= 2 and values.std() > 0:
        return percentile_interval(values)
    share = (right.sum() / counts.sum()).item()
    return wilson_interval(share * len(counts), len(counts))
