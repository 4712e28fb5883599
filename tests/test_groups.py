import csv
from pathlib import Path

import pytest
import torch

from clip_inversion.studies.experiment import Experiment, run_experiment
from clip_inversion.studies.groups import group_rows, two_level_interval

ROOT = Path(__file__).parents[1]


def outcomes(*rates: float, n: int = 60) -> list[torch.Tensor]:
    """One model a rate: ``n`` images of which the first ``rate * n`` are right."""
    return [torch.arange(n) < round(rate * n) for rate in rates]


def test_the_interval_widens_when_the_models_of_a_group_disagree():
    agree = two_level_interval(outcomes(0.5, 0.5, 0.5))
    disagree = two_level_interval(outcomes(0.1, 0.5, 0.9))  # the same pooled mean, over the same images
    assert agree[0] < 0.5 < agree[1] and disagree[0] < 0.5 < disagree[1]
    assert disagree[1] - disagree[0] > 2 * (agree[1] - agree[0])


def test_a_difference_interval_excludes_zero_only_when_the_groups_differ():
    low, high = two_level_interval(outcomes(0.8, 0.85, 0.9), baseline=outcomes(0.2, 0.25, 0.3))
    assert 0.45 < low < 0.6 < high < 0.75
    low, high = two_level_interval(outcomes(0.5, 0.55, 0.6), baseline=outcomes(0.5, 0.6, 0.55))
    assert low < 0 < high


def test_group_rows_report_each_group_and_its_differences():
    models = dict(zip("abcdef", outcomes(0.2, 0.3, 0.5, 0.6, 0.9, 1.0)))
    rows = group_rows({"1k": ["a", "b"], "10k": ["c", "d"], "100k": ["e", "f"]}, models)
    assert [(r["group"], r["models"], r["images"]) for r in rows] == [("1k", 2, 120), ("10k", 2, 120), ("100k", 2, 120)]
    assert [r["judge_accuracy"] for r in rows] == [0.25, 0.55, 0.95]
    assert rows[0]["per_model"] == "0.20 0.30" and rows[0]["minus_previous"] == ""
    assert rows[1]["minus_previous"] == 0.3 and rows[2]["minus_first"] == 0.7
    assert all(r["low"] <= r["judge_accuracy"] <= r["high"] for r in rows)
    assert len({tuple(r) for r in rows}) == 1  # the same columns in every row, for the CSV


def test_an_experiment_with_groups_reports_each_group_over_its_models(tmp_path):
    experiment = Experiment(
        name="grouped",
        groups={"small": ["toy-subject-efficientnet"], "large": ["toy-subject", "toy-subject-b"]},
        prompts=["a red star", "a blue circle"],
        seeds=2,
        configs=[str(ROOT / "configs" / "quickstart.yaml")],
        args=["--model.steps=3", "--trainer.enable_progress_bar=false", "--trainer.logger=false"],
        candidates=str(ROOT / "configs" / "prompts" / "toy-world.txt"),
        root=str(tmp_path),
    )
    assert experiment.models == ["toy-subject-efficientnet", "toy-subject", "toy-subject-b"]
    report = run_experiment(experiment)
    rows = list(csv.DictReader((report / "groups.csv").read_text().splitlines()))
    assert [(r["group"], r["models"], r["images"]) for r in rows] == [("small", "1", "4"), ("large", "2", "8")]
    scores = {
        r["model"]: float(r["judge_accuracy"])
        for r in csv.DictReader((report / "scores.csv").open())
        if r["prompt"] == "all"
    }
    pooled = (scores["toy-subject"] + scores["toy-subject-b"]) / 2  # the same number of images each
    assert float(rows[1]["judge_accuracy"]) == round(pooled, 4)
    assert "## Groups" in (report / "summary.md").read_text()


def test_groups_and_models_that_disagree_are_refused():
    with pytest.raises(ValueError, match="models and groups name different models"):
        Experiment(name="x", models=["toy-subject"], groups={"a": ["toy-judge"]}, prompts=["a red star"])
