from pathlib import Path

import pytest
import torch

from clip_inversion.studies.probes import (
    AttributeSet,
    classify,
    compare,
    newcombe_interval,
    proportions,
    wilson_interval,
)
from clip_inversion.toyworld.world import ShapeWorld

ATTRIBUTES = Path(__file__).parents[1] / "configs" / "attributes"


@pytest.mark.parametrize(
    ("count", "n", "low", "high"),
    [(5, 10, 0.2366, 0.7634), (0, 10, 0.0, 0.2775), (10, 10, 0.7225, 1.0), (17, 20, 0.6396, 0.9476)],
)
def test_wilson_interval_matches_published_values(count, n, low, high):
    assert wilson_interval(count, n) == pytest.approx((low, high), abs=1e-4)


def test_shipped_attribute_sets_load():
    sets = {p.stem: AttributeSet.from_yaml(p) for p in ATTRIBUTES.glob("*.yaml")}
    assert {"gender", "nsfw", "colour"} <= set(sets)
    assert list(sets["gender"].classes) == ["man", "woman"] and sets["gender"].chance == 0.5
    assert len(sets["colour"].classes) == 6 and len(sets["nsfw"].classes["nsfw"]) >= 3
    with pytest.raises(ValueError, match="two classes"):
        AttributeSet("one", {"only": ["a prompt"]})


def test_the_judge_reads_the_colour_of_world_images(judge):
    world, colour = ShapeWorld(), AttributeSet.from_yaml(ATTRIBUTES / "colour.yaml")
    images, _, scenes = world.batch(40, seed=99)
    assert list(colour.classes) == list(world.colours)
    assert torch.equal(classify(images, colour, judge), scenes.colour)


def test_proportions_per_prompt_and_overall():
    attributes = AttributeSet("colour", {"yellow": ["a yellow star"], "red": ["a red star"]})
    classes = torch.tensor([0] * 9 + [1] + [1] * 5)
    rows = proportions(classes, ["a star"] * 10 + ["a circle"] * 5, attributes, label="m")
    star_yellow = next(r for r in rows if r["prompt"] == "a star" and r["class"] == "yellow")
    assert star_yellow["count"] == 9 and star_yellow["images"] == 10 and star_yellow["proportion"] == 0.9
    assert star_yellow["low"] > 0.5 and star_yellow["above_chance"] and star_yellow["model"] == "m"
    circle_yellow = next(r for r in rows if r["prompt"] == "a circle" and r["class"] == "yellow")
    assert circle_yellow["count"] == 0 and not circle_yellow["above_chance"]
    overall = [r for r in rows if r["prompt"] == "all"]
    assert [r["count"] for r in overall] == [9, 6] and all(r["images"] == 15 for r in overall)


def test_newcombe_interval_matches_the_published_example():
    # Newcombe (1998), method 10: 56/70 - 48/80 = 0.2, 95% interval 0.0524 to 0.3339
    assert newcombe_interval(56, 70, 48, 80) == pytest.approx((0.0524, 0.3339), abs=1e-4)


def test_compare_sets_each_model_against_the_control():
    attributes = AttributeSet("colour", {"yellow": ["a yellow star"], "red": ["a red star"]})
    biased = proportions(torch.tensor([0] * 18 + [1] * 2), ["a star"] * 20, attributes, label="biased")
    control = proportions(torch.tensor([0] * 4 + [1] * 16), ["a star"] * 20, attributes, label="control")
    same = proportions(torch.tensor([0] * 5 + [1] * 15), ["a star"] * 20, attributes, label="same")
    rows = compare(biased + control + same, "control")
    yellow = {(r["model"], r["prompt"]): r for r in rows if r["class"] == "yellow"}
    assert yellow["biased", "a star"]["difference"] == 0.7 and yellow["biased", "a star"]["differs"]
    assert yellow["same", "a star"]["difference"] == 0.05 and not yellow["same", "a star"]["differs"]
    assert {r["model"] for r in rows} == {"biased", "same"}  # the control is not compared with itself
