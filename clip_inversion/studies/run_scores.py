"""One run's row of scores: the judge's CLIPSIM and accuracy, and FID and KID against real images, each with
its 95% interval from a bootstrap over prompts (:mod:`clip_inversion.studies.statistics`)."""

from __future__ import annotations

import torch
from torch import Tensor
from tqdm.auto import tqdm

from clip_inversion.core.clip import FrozenCLIP
from clip_inversion.studies.features import ImageSet
from clip_inversion.studies.metrics import score_images
from clip_inversion.studies.statistics import (
    accuracy_interval,
    fid,
    kid,
    kid_subset_size,
    normal_interval,
    percentile_interval,
    prompt_ratio,
    resample_prompts,
    small_sample_warning,
    take,
)


def judge_scores(
    images: ImageSet,
    embeddings: Tensor,
    judge: FrozenCLIP,
    candidates: list[str] | None,
    resamples: int,
    seed: int,
) -> dict[str, float]:
    """CLIPSIM (100 x the judge's cosine) and zero-shot accuracy of a run's ``(N, D)`` judge embeddings (among
    ``candidates``, default the run's prompts), with 95% intervals over ``resamples`` resamples of its prompts."""
    scores = score_images(embeddings, images.prompts, judge, candidates)
    per_prompt = scores["per_prompt"].values()
    counts = torch.tensor([s["images"] for s in per_prompt], dtype=torch.float64)
    cosine = torch.tensor([s["judge_cosine"] for s in per_prompt], dtype=torch.float64) * counts
    right = torch.tensor([s["judge_accuracy"] for s in per_prompt], dtype=torch.float64) * counts
    drawn = resample_prompts(len(counts), resamples, seed)
    low, high = percentile_interval(100 * prompt_ratio(cosine, counts, drawn))
    accuracy_low, accuracy_high = accuracy_interval(right.round(), counts, drawn)
    return {
        "clipsim": 100 * scores["judge_cosine"],
        "clipsim_low": low,
        "clipsim_high": high,
        "accuracy": scores["judge_accuracy"],
        "accuracy_low": accuracy_low,
        "accuracy_high": accuracy_high,
        "candidates": scores["judge_among"],
    }


def distances(
    images: ImageSet, fake: Tensor, real: ImageSet, reals: Tensor, kid_subsets: int, resamples: int, seed: int
) -> dict[str, object]:
    """FID and KID between the run's images and the real ones, on the prompts both have, with 95% intervals
    over ``resamples`` paired resamples of those prompts (a resample costs one FID and one KID).

    Args:
        images: the run's images; ``fake``: their ``(N, D)`` features.
        real: the real images; ``reals``: their ``(M, D)`` features, on ``fake``'s device.
    """
    compared = [p for p in dict.fromkeys(images.prompts) if p in set(real.prompts)]
    fake_groups, real_groups = images.groups(compared), real.groups(compared)
    mine, theirs = torch.cat(fake_groups), torch.cat(real_groups)
    fid_value = fid(reals[theirs], fake[mine])
    kid_mean, kid_std = kid(reals[theirs], fake[mine], kid_subsets, seed)
    fids, kids = [], []
    for drawn in tqdm(resample_prompts(len(compared), resamples, seed), "bootstrap", leave=False, disable=None):
        f, r = take(fake_groups, drawn), take(real_groups, drawn)
        fids.append(fid(reals[r], fake[f]))
        kids.append(kid(reals[r], fake[f], kid_subsets, seed)[0])
    fid_low, fid_high = normal_interval(fid_value, torch.tensor(fids))
    kid_low, kid_high = normal_interval(kid_mean, torch.tensor(kids))
    row = {
        "compared_prompts": len(compared),
        "compared_images": len(mine),
        "real_images": len(theirs),
        "fid": fid_value,
        "fid_low": max(0.0, fid_low),  # a distance: never below 0
        "fid_high": fid_high,
        "kid": kid_mean,
        "kid_std": kid_std,
        "kid_subset": kid_subset_size(len(theirs), len(mine)),
        "kid_low": kid_low,
        "kid_high": kid_high,
    }
    warning = small_sample_warning(len(theirs), len(mine), reals.shape[1])
    if warning:
        row["warning"] = warning
    return row
