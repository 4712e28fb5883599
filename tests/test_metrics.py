import json
import math

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from clip_inversion.cli import run
from clip_inversion.rundir import append_records, atomic_save_image
from clip_inversion.studies.metrics import (
    JudgeCosine,
    ZeroShotAccuracy,
    component_scores,
    mean_subject_cosine,
    score_run,
)
from clip_inversion.toyworld.evaluate import judge_run, world_levels
from clip_inversion.toyworld.world import ShapeWorld


@pytest.fixture(scope="module")
def scenes():
    world = ShapeWorld()
    images, _, scenes = world.batch(60, seed=4242)
    captions = world.captions_of("a {colour} {shape}")
    return world, images, captions, scenes.colour * len(world.shapes) + scenes.shape


def test_judge_cosine_is_the_judge_cosine_per_prompt_and_overall(judge, scenes):
    _, images, captions, targets = scenes
    metric = JudgeCosine(captions, judge)
    metric.update(images[:30], targets[:30])
    metric.update(images[30:], [captions[t] for t in targets[30:]])  # prompts work as targets too
    expected = (judge.encode_image(images) * judge.encode_text(captions)[targets]).sum(dim=1)
    torch.testing.assert_close(metric.compute(), expected.mean())
    per_prompt = metric.per_prompt()
    k = int(targets[0])
    torch.testing.assert_close(per_prompt[k], expected[targets == k].mean())
    unseen = sorted(set(range(len(captions))) - set(targets.tolist()))
    assert all(per_prompt[u].isnan() for u in unseen)


def test_zero_shot_accuracy_finds_true_captions_and_not_wrong_ones(judge, scenes):
    world, images, captions, targets = scenes
    right = ZeroShotAccuracy(captions, judge, levels=world_levels(world))
    right.update(images, targets)
    scores = right.compute()
    assert set(scores) == {"prompt", "colour", "shape"}
    assert scores["colour"] == 1 and scores["prompt"] >= 0.85  # the judge scores ~96% on fresh scenes
    assert scores["shape"] >= scores["prompt"]
    # the same images labelled with the next colour: the colour is never right, the shape always as before
    wrong = ZeroShotAccuracy(captions, judge, levels=world_levels(world))
    wrong.update(images, (targets + len(world.shapes)) % len(captions))
    assert wrong.compute()["colour"] == 0 and wrong.compute()["shape"] == scores["shape"]
    per_prompt = right.per_prompt()["prompt"]
    assert per_prompt[int(targets[0])] >= 0 and per_prompt.isnan().sum() == len(captions) - len(set(targets.tolist()))


def test_levels_must_label_every_prompt(judge):
    with pytest.raises(ValueError, match="labels"):
        ZeroShotAccuracy(["a red star", "a blue star"], judge, levels={"colour": ["red"]})


def test_a_finished_run_directory_is_scored(tmp_path, judge, scenes):
    _, images, captions, targets = scenes
    records = []
    for i in range(6):  # a hand-made run: six world scenes, each "inverted" from its own caption
        path = tmp_path / "images" / f"{i:05d}.png"
        atomic_save_image(images[i], path)
        prompt = captions[targets[i]]
        records.append({"id": f"{i:05d}", "prompt": prompt, "image": f"images/{i:05d}.png", "cosine": 0.5})
    append_records(tmp_path, records)
    scores = score_run(tmp_path, judge, candidates=captions)
    assert scores["images"] == 6 and scores["subject_cosine"] == 0.5
    assert scores["judge_accuracy"] >= 5 / 6 and scores["judge_cosine"] > 0.5
    assert set(scores["per_prompt"]) == {r["prompt"] for r in records}
    with pytest.raises(ValueError, match="not among the candidates"):
        score_run(tmp_path, judge, candidates=["a drawing of a dog"])
    toy = judge_run(tmp_path)
    assert toy["colour"] == 1 and toy["images"] == 6 and toy["among"] == len(ShapeWorld().captions_of())
    assert toy["judge_cosine"] == pytest.approx(scores["judge_cosine"], abs=1e-5)
    per = judge_run(tmp_path, per_caption=True)["per_caption"]  # each caption's own scores, for pairing runs
    prompts = [r["prompt"] for r in records]
    assert set(per) == set(prompts)
    for key in ("colour", "caption", "judge_cosine"):
        assert sum(per[p][key] for p in prompts) / 6 == pytest.approx(toy[key], abs=1e-5)


def test_a_prompt_stopped_without_a_cosine_is_left_out_of_the_subject_mean():
    # a prompt whose loss was not finite may record "cosine": null in the manifest
    assert mean_subject_cosine([{"cosine": 0.5}, {"cosine": None}, {"cosine": 0.7}]) == pytest.approx(0.6)
    assert math.isnan(mean_subject_cosine([{"cosine": None}]))


def test_judge_scores_are_logged_to_tensorboard_during_a_run(tmp_path):
    config = tmp_path / "judge.yaml"
    config.write_text(
        "trainer:\n  callbacks:\n"
        "    - class_path: clip_inversion.studies.judge.JudgeScores\n      init_args: {every_n_steps: 2}\n"
    )
    run(
        [
            "fit",
            f"--config={config}",
            "--model.steps=4",
            "--model.init_size=16",
            f"--trainer.default_root_dir={tmp_path}",
            "--trainer.enable_progress_bar=false",
            "--data.prompts=[a red circle, a blue star, a green square]",
            "--data.batch_size=2",
        ]
    )
    (events,) = (tmp_path / "lightning_logs" / "version_0").glob("events.out.tfevents.*")
    accumulator = EventAccumulator(str(events)).Reload()
    scalars = set(accumulator.Tags()["scalars"])
    assert {"judge/cosine/00000_a-red-circle", "judge/correct/00002_a-green-square"} <= scalars
    assert [e.step for e in accumulator.Scalars("judge/accuracy")] == [4, 8]  # after each batch
    records = [json.loads(line) for line in (tmp_path / "manifest.jsonl").read_text().splitlines()]
    final = score_run(tmp_path, "toy-judge")  # the last logged aggregate is the run's score, to PNG precision
    assert accumulator.Scalars("judge/cosine")[-1].value == pytest.approx(final["judge_cosine"], abs=0.02)
    assert len(records) == 3
    # the HParams tab's metrics: the judge's final aggregates beside the inverted model's mean cosine
    assert accumulator.Scalars("hp/judge_cosine")[-1].value == accumulator.Scalars("judge/cosine")[-1].value
    assert accumulator.Scalars("hp/judge_accuracy")[-1].value == accumulator.Scalars("judge/accuracy")[-1].value
    assert accumulator.Scalars("judge/among")[-1].value == accumulator.Scalars("hp/judge_among")[-1].value == 3


def test_component_scores_read_which_term_an_image_holds(judge):
    world = ShapeWorld(colours=("red", "blue"), shapes=("circle", "square"))
    images, captions, _ = world.batch(40, seed=7)
    red_circles = images[[i for i, c in enumerate(captions) if "red" in c and "circle" in c]]
    rows = component_scores(red_circles, "a red circle:1 | a blue square:0.5 | a green star:-0.3", judge)
    terms = [("a red circle", 1), ("a blue square", 0.5), ("a green star", -0.3)]
    assert [(r["term"], r["weight"]) for r in rows] == terms
    assert rows[0]["judge_cosine"] > rows[1]["judge_cosine"] + 0.2
    assert rows[0]["closest"] == 1.0 and rows[1]["closest"] == 0.0 and rows[2]["closest"] is None


def test_composite_prompts_are_judged_against_their_blended_target(judge):
    blend = "a red circle | a blue square"
    cosine = JudgeCosine(["a red circle", blend], judge)
    text = judge.encode_text(["a red circle", "a blue square"])
    assert torch.allclose(cosine.text[1], torch.nn.functional.normalize(text.sum(0), dim=0), atol=1e-5)
    assert torch.allclose(cosine.text[0], text[0], atol=1e-6)
