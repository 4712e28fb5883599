"""Models grouped by a factor (training-data size, say), with intervals over training runs and images together.

One trained model a condition confounds the condition with the luck of that training run. An experiment's
``groups`` name several independently trained models a condition; each group's accuracy is the share of
all its images the judge reads right, and its 95% interval comes from a two-level bootstrap: draw the
group's models with replacement, then each drawn model's images with replacement, and pool. The interval
therefore widens when the models of a group disagree, not only when there are few images.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _resample(outcomes: list[Tensor], resamples: int, generator: torch.Generator) -> Tensor:
    """``(resamples,)`` pooled means of two-level bootstrap draws (models, then each model's images)."""
    means = torch.empty(resamples, dtype=torch.float64)
    for r in range(resamples):
        picked = torch.randint(len(outcomes), (len(outcomes),), generator=generator).tolist()
        draws = [outcomes[m][torch.randint(len(outcomes[m]), (len(outcomes[m]),), generator=generator)] for m in picked]
        means[r] = torch.cat(draws).double().mean()
    return means


def two_level_interval(
    outcomes: list[Tensor], resamples: int = 2000, seed: int = 0, baseline: list[Tensor] | None = None
) -> tuple[float, float]:
    """95% percentile interval of a group's pooled mean, or of its difference from ``baseline``'s.

    Args:
        outcomes: one ``(N_m,)`` tensor a model of the group: each image's outcome (1 right, 0 wrong).
        resamples: bootstrap draws.
        seed: seed of the draws.
        baseline: another group's outcomes, resampled independently; the interval is then of
            ``mean(outcomes) - mean(baseline)``.

    Returns:
        ``(low, high)``.
    """
    if not outcomes or any(len(o) == 0 for o in outcomes):
        raise ValueError("every model of a group needs at least one image")
    generator = torch.Generator().manual_seed(seed)
    means = _resample(outcomes, resamples, generator)
    if baseline is not None:
        means = means - _resample(baseline, resamples, generator)
    low, high = torch.quantile(means, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    return low, high


def group_rows(groups: dict[str, list[str]], outcomes: dict[str, Tensor], seed: int = 0) -> list[dict]:
    """One row a group: its models' accuracies, the pooled accuracy with its two-level interval, and the
    difference from the previous group and from the first one, each with its interval.

    Args:
        groups: ``{group: [model, ...]}`` in the order of the factor (smallest data first).
        outcomes: ``{model: (N,)}`` each image's outcome (1 right, 0 wrong).
        seed: seed of the bootstrap.
    """
    rows: list[dict] = []
    names = list(groups)
    for i, name in enumerate(names):
        mine = [outcomes[m].float() for m in groups[name]]
        low, high = two_level_interval(mine, seed=seed)
        row = {
            "group": name,
            "models": len(mine),
            "images": sum(len(o) for o in mine),
            "per_model": " ".join(f"{o.mean().item():.2f}" for o in mine),
            "judge_accuracy": round(torch.cat(mine).mean().item(), 4),
            "low": round(low, 4),
            "high": round(high, 4),
            **{k: "" for k in ("minus_previous", "minus_previous_interval", "minus_first", "minus_first_interval")},
        }
        for key, other in (("previous", names[i - 1] if i else None), ("first", names[0] if i > 1 else None)):
            if other is not None:
                theirs = [outcomes[m].float() for m in groups[other]]
                d_low, d_high = two_level_interval(mine, seed=seed, baseline=theirs)
                row[f"minus_{key}"] = round(torch.cat(mine).mean().item() - torch.cat(theirs).mean().item(), 4)
                row[f"minus_{key}_interval"] = f"[{d_low:+.2f}, {d_high:+.2f}]"
        rows.append(row)
    return rows
