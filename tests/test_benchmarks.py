"""The speed suite's rows run (tiny settings, CPU): the GPU case is the same code, not dead code."""

import importlib.util
import json
from pathlib import Path

import open_clip
import pytest
import torch
from PIL import Image
from scipy.stats import binomtest

from clip_inversion.rundir import read_manifest

ROOT = Path(__file__).parents[1]
SPEED = ROOT / "benchmarks" / "speed.py"


@pytest.fixture(scope="module")
def speed():
    spec = importlib.util.spec_from_file_location("speed", SPEED)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("row", ["a-anomaly", "b", "c"])
def test_every_kind_of_row_runs_and_reports_its_times(speed, row, tmp_path):
    args = ["--steps", "4", "--warmup", "1", "--copies", "2", "--schedule", "0:16,2:24", "--prompts", "1"]
    args += ["--fast-batch", "2", "--fast-precision", "bf16-mixed", f"--run-dir={tmp_path}", "--child", row]
    result = speed.child(speed.parse_args(args))
    assert result["prompts"] == result["batch"] == (2 if row == "c" else 1)
    assert 0 < result["step_s"] < result["total_s"] and result["peak"] > 0


def test_flop_count_and_matmul_peak(speed):
    flops = speed.step_flops(speed.parse_args(["--model", "toy-subject"]))
    assert 1e7 < flops < 1e9  # the toy ResNet at 64 px: forward and input gradient of one image
    assert speed.matmul_peak("cpu", 64) > 0


def benchmark(monkeypatch, name: str):
    """Import ``benchmarks/<name>.py`` with its folder on the path (the scripts import their siblings)."""
    monkeypatch.syspath_prepend(str(SPEED.parent))
    spec = importlib.util.spec_from_file_location(name, SPEED.parent / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_parameterisation_comparison_pools_seeds_and_compares_with_its_baseline(monkeypatch, capsys):
    compare = benchmark(monkeypatch, "compare_parameterisations")
    argv = ["compare_parameterisations.py", "--steps", "2", "--baseline-steps", "4", "--only", "pixels", "--seeds", "0"]
    monkeypatch.setattr("sys.argv", argv)
    compare.main()
    rows = [line.split(" | ") for line in capsys.readouterr().out.splitlines() if line.startswith("| pixels")]
    assert (rows[0][1], rows[0][5], rows[1][1]) == ("4", "-", "2")  # the baseline first, at its own steps
    pooled = [float(r[4].split("%")[0]) for r in rows]  # "53% [45, 60]"
    difference, interval = rows[1][5].split(" [")  # "+17 [+6, +28]"
    low, high = (float(x) for x in interval.rstrip("]").split(", "))
    assert abs(float(difference) - (pooled[1] - pooled[0])) <= 1 and low <= float(difference) <= high


def zero_shot_counts(run_dir: Path, judge_dir: Path, captions: list[str]) -> dict[str, tuple[int, int]]:
    """An independent judge: open_clip's own model, tokenizer and preprocessing on the run's PNGs. Returns, for
    ``colour`` and ``caption`` (colour and shape), the images its nearest caption gets right, and how many of
    the others a near tie (the runner-up within 1e-4 of the nearest, and right) could turn."""
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{judge_dir}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{judge_dir}")
    records = [json.loads(line) for line in (run_dir / "manifest.jsonl").read_text().splitlines()]
    with torch.no_grad():
        images = torch.stack([preprocess(Image.open(run_dir / r["image"])) for r in records])
        image_features = torch.nn.functional.normalize(model.encode_image(images), dim=-1)
        text_features = torch.nn.functional.normalize(model.encode_text(tokenizer(captions)), dim=-1)
    top = (image_features @ text_features.T).topk(2, dim=1)
    counts = {}
    for key, words in (("colour", slice(1, 2)), ("caption", slice(1, 3))):  # "a {colour} {shape}"
        right = fragile = 0
        for (first, second), (s1, s2), record in zip(top.indices.tolist(), top.values.tolist(), records):
            wanted = record["prompt"].split()[words]
            right += captions[first].split()[words] == wanted
            fragile += s1 - s2 < 1e-4 and (captions[first].split()[words] == wanted) != (
                captions[second].split()[words] == wanted
            )
        counts[key] = (right, fragile)
    return counts


def test_world_b_inverts_with_its_subject_and_is_scored_by_its_judge(monkeypatch, capsys):
    toy_judge = benchmark(monkeypatch, "toy_judge")
    judge_dir = ROOT / "clip_inversion" / "toyworld" / "models" / "toy-clutter-judge"
    seen, judge_run = {}, toy_judge.judge_run

    def recorded(run_dir, judge, world, per_caption=False):  # an independent count, taken before the run dir goes
        seen.update(model=read_manifest(run_dir)[0].record["model"], judge=judge.model_name)
        seen["counts"] = zero_shot_counts(Path(run_dir), judge_dir, world.captions_of())
        return judge_run(run_dir, judge, world, per_caption)

    monkeypatch.setattr(toy_judge, "judge_run", recorded)
    one_step = ["--model.steps=1", "--model.init_size=64", "--trainer.callbacks=[]"]  # at the judge's input size
    monkeypatch.setattr("sys.argv", ["toy_judge.py", "--world", "b", "--seeds", "0", "--", *one_step])
    toy_judge.main()
    assert seen["model"] == "toy-clutter-subject" and seen["judge"] == "toy-clutter-judge"
    row = capsys.readouterr().out.strip().split(" | ")
    n = 30
    for cell, key in ((row[4], "colour"), (row[5], "caption")):  # pooled: "50% [33, 67]", a Wilson interval
        right, fragile = seen["counts"][key]
        k = round(float(cell.split("%")[0]) * n / 100)  # 30 images: each count has its own whole percentage
        assert abs(k - right) <= fragile, (key, k, right, fragile)  # after one step, near ties are common
        low, high = binomtest(k, n).proportion_ci(method="wilson")
        assert cell == f"{100 * k / n:.0f}% [{100 * low:.0f}, {100 * high:.0f}]", (cell, k)


def test_world_a_ensembles_are_refused_on_world_b(monkeypatch):
    compare = benchmark(monkeypatch, "compare_parameterisations")
    monkeypatch.setattr("sys.argv", ["compare_parameterisations.py", "--world", "b", "--only", "pixels + ensemble"])
    with pytest.raises(SystemExit) as exit_:
        compare.main()
    assert exit_.value.code == 2


def test_a_steps_operator_calls_do_not_grow_with_the_prompts(monkeypatch):
    monkeypatch.syspath_prepend(str(SPEED.parent))
    spec = importlib.util.spec_from_file_location("ops_per_step", SPEED.parent / "ops_per_step.py")
    ops = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ops)
    one, many = ops.count(1, warmup=2), ops.count(8, warmup=2)
    assert one > 100 and many <= 1.1 * one, (one, many)
