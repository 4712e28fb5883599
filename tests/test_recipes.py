"""The implicit image, the Direct Ascent Synthesis pyramid, the recipe configs and their comparison."""

import copy
import json
from pathlib import Path

import pytest
import torch
import yaml

from clip_inversion.cli import main, run
from clip_inversion.core.image import ImplicitImage, PyramidImage

ROOT = Path(__file__).parents[1]
QUICKSTART = str(ROOT / "configs" / "quickstart.yaml")
IMPLICIT = "--model.image=clip_inversion.core.image.ImplicitImage"


def test_an_implicit_image_is_each_prompts_own_network():
    together = ImplicitImage([1, 2, 3], 16)
    changed = ImplicitImage([1, 9, 3], 16)  # another seed for the second prompt only
    assert together().shape == (3, 3, 16, 16) and together().min() >= 0 and together().max() <= 1
    assert torch.equal(together()[[0, 2]], changed()[[0, 2]]) and not torch.allclose(together()[1], changed()[1])
    assert all(p.shape[0] == 3 for p in together.parameters())
    together()[2].mean().backward()
    grads = [p.grad for p in together.parameters()]
    assert all(g[:2].abs().sum() == 0 for g in grads) and all(g[2].abs().sum() > 0 for g in grads)


def test_higher_frequencies_switch_on_with_the_size_and_leave_the_picture_unchanged():
    image = ImplicitImage([0, 1], 16, scale=8.0)
    far = image.frequencies.norm(dim=-1) > 16 / image.per_cycle  # (P, F): off at 16 px
    assert far.any() and (image.frequencies.norm(dim=-1) <= 64 / image.per_cycle).sum() > (~far).sum()
    first = image.weights[0]
    off_rows = torch.cat([far, far], dim=1)  # each frequency's sine and cosine rows
    assert first[off_rows].abs().sum() == 0  # off frequencies start at zero weight
    image().sum().backward()
    assert first.grad[off_rows].abs().sum() == 0 and first.grad[~off_rows].abs().sum() > 0
    params = list(image.parameters())
    image.upsample(64)
    assert list(image.parameters()) == params and image.size == 64 and image().shape == (2, 3, 64, 64)
    now = image().detach()
    image.per_cycle *= 4  # the 16 px frequencies only: the same picture, as the new ones weigh zero
    torch.testing.assert_close(image().detach(), now)
    image.per_cycle /= 4
    first.grad = None
    image().sum().backward()
    assert first.grad[off_rows].abs().sum() > 0  # now they learn


def test_an_implicit_image_can_be_set_to_a_picture_and_loaded_from_its_state():
    target = torch.nn.functional.interpolate(torch.rand(2, 3, 4, 4), size=16, mode="bilinear") * 0.8 + 0.1
    image = ImplicitImage([0, 1], 8)
    image.set_(target)
    assert image.size == 16 and (image().detach() - target).abs().mean() < 0.03
    loaded = ImplicitImage([], 8)  # as a run builds it before a checkpoint loads
    loaded.resize_for({name: value.shape for name, value in image.state_dict().items()})
    loaded.load_state_dict(image.state_dict())
    assert loaded.size == 16 and torch.equal(loaded(), image())


def test_the_das_pyramid_steps_its_levels_from_one_pixel_and_starts_grey():
    image = PyramidImage([0, 1], 16, std=0.0, spacing=4, mode="bicubic")
    assert [level.shape[-1] for level in image.levels] == [1, 5, 9, 13, 16]
    assert torch.equal(image(), torch.full((2, 3, 16, 16), 0.5))
    image.upsample(24)
    assert [level.shape[-1] for level in image.levels] == [1, 5, 9, 13, 16, 20, 24]
    with torch.no_grad():
        image.levels[1].normal_()
    bilinear = copy.deepcopy(image)
    bilinear.mode = "bilinear"
    assert not torch.allclose(image(), bilinear())  # the levels are resized bicubically


def quickstart_args(run_dir: Path, *args: str) -> list[str]:
    """The quickstart's prompts with an implicit image, tiny: 16 -> 32 px at step 2, a checkpoint every step."""
    callbacks = (
        "--trainer.callbacks=[{class_path: clip_inversion.callbacks.ResolutionSchedule, init_args: "
        "{milestones: {2: 32}}}, {class_path: clip_inversion.callbacks.RunCheckpoint, "
        "init_args: {every_n_train_steps: 1}}]"
    )
    return ["fit", "--config", QUICKSTART, IMPLICIT, "--model.init_size=16", "--model.copies=2", "--model.steps=4",
            callbacks, f"--trainer.default_root_dir={run_dir}", "--trainer.enable_progress_bar=false",
            "--trainer.logger=false", *args]  # fmt: skip


def test_the_quickstart_inverts_with_an_implicit_image_and_resumes_where_it_stopped(tmp_path):
    whole = run(quickstart_args(tmp_path / "whole"))
    records = [json.loads(line) for line in (tmp_path / "whole" / "manifest.jsonl").read_text().splitlines()]
    assert len(records) == 6 and {r["resolution"] for r in records} == {32}  # the quickstart's six prompts
    run(quickstart_args(tmp_path / "stopped", "--trainer.max_steps=3"))  # interrupted after step 3 of 4
    assert not (tmp_path / "stopped" / "manifest.jsonl").exists()
    resumed = run(quickstart_args(tmp_path / "stopped", "--ckpt_path=last"))
    assert type(resumed.model.inverter.image) is ImplicitImage
    torch.testing.assert_close(resumed.model.inverter.image(), whole.model.inverter.image())  # as if never stopped
    assert len((tmp_path / "stopped" / "manifest.jsonl").read_text().splitlines()) == 6


@pytest.mark.parametrize("config", sorted((ROOT / "configs" / "recipes").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_recipe_runs_and_does_the_released_settings_work(tmp_path, config):
    model = yaml.safe_load(config.read_text())["model"]
    assert abs(model["copies"] * model["steps"] - 13 * 400) <= 0.1 * 13 * 400
    for setting in ("steps", "init_size", "copies", "augmentations", "image", "tv", "distance", "optimizer"):
        assert setting in model, setting  # its claim rests on its own settings, not the quickstart's
    main(["fit", "--config", QUICKSTART, "--config", str(config), "--model.steps=2", "--data.prompts=[a red star]",
          f"--trainer.default_root_dir={tmp_path}", "--trainer.enable_progress_bar=false"])  # fmt: skip
    assert len((tmp_path / "manifest.jsonl").read_text().splitlines()) == 1


@pytest.fixture
def compare(benchmark):
    return benchmark("compare_recipes")


def test_the_comparison_pairs_captions_and_chooses_on_one_world_to_report_on_the_other(
    compare, monkeypatch, tmp_path, capsys
):
    captions = [f"caption {i}" for i in range(30)]

    def judge_world(seed, config, args, world, per_caption, keep=None, **_):
        # das: 10 more captions right on world A only
        right = 10 * (seed + 1) + (10 if "das" in args[1] and world == "a" else 0)
        per = {c: {"colour": 1.0, "caption": float(i < right), "judge_cosine": 0.5} for i, c in enumerate(captions)}
        return {"caption": right / 30, "judge_cosine": 0.5, "per_caption": per}, 1.0

    monkeypatch.setattr(compare, "judge_world", judge_world)
    argv = ["compare_recipes.py", "--recipes", "das", "--report-seeds", "0", "1", "--tune-seeds", "0"]
    monkeypatch.setattr("sys.argv", [*argv, "--out", str(tmp_path)])
    compare.main()
    out = capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "das").iterdir()) == ["a-seed0.json", "a-seed1.json", "b-seed0.json",
                                                                       "b-seed1.json"]  # fmt: skip
    rows = [line.split(" | ") for line in out.splitlines() if line.startswith("| A | ")]
    assert [r[1] for r in rows] == ["released", "das"]
    assert rows[0][5].startswith("50% [") and rows[1][5].startswith("83% [")  # 15 / 30 and 25 / 30 pooled
    mean, interval = rows[1][6].split(" [")
    low, high = (float(x) for x in interval.rstrip("]").split(", "))
    assert mean == "+33" and 0 < low < 33 < high  # 10 of 30 captions gain a point on each seed
    assert "chosen on world B (seeds 0): das; on world A (seeds 0,1) colour and shape minus released +33" in out
    assert "chosen on world A (seeds 0): das; on world B (seeds 0,1) colour and shape minus released +0" in out
    assert out.count(": wins") == 1 and out.count(": does not win") == 1  # better on one world only


def test_the_comparison_chooses_before_it_reports_and_never_tunes_the_baseline(compare, monkeypatch, tmp_path):
    calls = []

    def judge_world(seed, config, args, world, per_caption, keep=None, **_):
        calls.append((Path(args[1]).stem, world, seed))
        return {"caption": 0.5, "judge_cosine": 0.5, "per_caption": {"c": {"colour": 1.0, "caption": 0.5}}}, 1.0

    monkeypatch.setattr(compare, "judge_world", judge_world)
    argv = ["compare_recipes.py", "--recipes", "das", "--worlds", "a", "--report-seeds", "0", "--tune-seeds", "10"]
    monkeypatch.setattr("sys.argv", [*argv, "--out", str(tmp_path)])
    compare.main()
    assert calls == [("das", "a", 10), ("released-64px", "a", 0), ("das", "a", 0)]


def test_the_comparison_scores_the_kept_images_with_the_evaluation_suite(compare, monkeypatch, tmp_path, capsys):
    from clip_inversion.data import read_prompts
    from clip_inversion.rundir import atomic_save_image
    from clip_inversion.studies.evaluate import Settings, evaluate
    from clip_inversion.toyworld.real import write_real

    captions = [p.text for p in read_prompts(ROOT / "configs" / "prompts" / "toy-world.txt")]

    def judge_world(seed, config, args, world, per_caption, keep=None, **_):
        # das: renders of the world; released: noise
        if "das" in args[1]:
            write_real(captions, keep, per_caption=1, seed=100 + seed)
        else:
            g, lines = torch.Generator().manual_seed(seed), []
            for i, caption in enumerate(captions):
                atomic_save_image(torch.rand(3, 64, 64, generator=g), Path(keep) / f"images/{i}.png")
                lines.append(json.dumps({"prompt": caption, "image": f"images/{i}.png"}) + "\n")
            (Path(keep) / "manifest.jsonl").write_text("".join(lines))
        per = {c: {"colour": 1.0, "caption": 0.5, "judge_cosine": 0.5} for c in captions}
        return {"caption": 0.5, "judge_cosine": 0.5, "per_caption": per}, 1.0

    monkeypatch.setattr(compare, "judge_world", judge_world)
    argv = ["compare_recipes.py", "--recipes", "das", "--worlds", "a", "--report-seeds", "0", "1", "--tune-seeds"]
    monkeypatch.setattr("sys.argv", [*argv, "--out", str(tmp_path / "out")])
    compare.main()
    out = capsys.readouterr().out
    rows = {r[1]: r for r in (line.split(" | ") for line in out.splitlines() if "| A | " in line)}
    clipsim = {recipe: float(row[9].split(" [")[0]) for recipe, row in rows.items()}
    fid = {recipe: float(row[10].split(" [")[0]) for recipe, row in rows.items()}
    assert clipsim["das"] > clipsim["released"] and fid["das"] < fid["released"]
    # the oracle renders its own real images (world A's, 4 a caption, seed 0) and evaluates the kept das runs
    real = write_real(captions, tmp_path / "real", per_caption=4, seed=0)
    pooled = tmp_path / "pooled"  # both seeds' kept images in one folder
    pooled.mkdir()
    for seed in (0, 1):
        for path in (tmp_path / "out" / "das" / f"a-seed{seed}" / "images").iterdir():
            (pooled / f"{seed}-{path.name}").write_bytes(path.read_bytes())
    (pooled / "manifest.jsonl").write_text("".join(
        json.dumps({"prompt": json.loads(line)["prompt"], "image": f"{seed}-{Path(json.loads(line)['image']).name}"})
        + "\n" for seed in (0, 1) for line in (tmp_path / "out" / "das" / f"a-seed{seed}" / "manifest.jsonl").open()
    ))  # fmt: skip
    (expected,) = evaluate([pooled], Settings(real=str(real), judge="toy-judge", out=str(tmp_path / "report")))
    assert rows["das"][10] == f"{expected['fid']:.2f} [{expected['fid_low']:.2f}, {expected['fid_high']:.2f}] (0,1)"
    assert rows["das"][9].startswith(f"{expected['clipsim']:.1f} [")
    (tmp_path / "out" / "released" / "a-seed1" / "manifest.jsonl").unlink()  # now only seed 0 is kept by both
    monkeypatch.setattr("sys.argv", [*argv, "--out", str(tmp_path / "out"), "--no-run"])
    compare.main()
    rows = [line.split(" | ") for line in capsys.readouterr().out.splitlines() if "| A | " in line]
    assert [(r[9][-3:], r[10][-3:]) for r in rows] == [("(0)", "(0)")] * 2
    assert len((tmp_path / "out" / "pooled" / "a" / "das" / "manifest.jsonl").read_text().splitlines()) == 30


def test_a_judged_run_keeps_its_images_where_asked_and_drops_its_checkpoints(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from toy_judge import judge_world

    steps = ["--model.steps=2", "--writer.snapshot_steps=[]", "--model.copies=2"]
    scores, _ = judge_world(0, QUICKSTART, steps, "a", keep=tmp_path / "run")
    lines = (tmp_path / "run" / "manifest.jsonl").read_text().splitlines()
    assert scores["images"] == len(lines) == 30 and len(list((tmp_path / "run" / "images").glob("*.png"))) == 30
    assert not (tmp_path / "run" / "checkpoints").exists()
