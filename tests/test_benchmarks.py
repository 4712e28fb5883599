"""The speed suite's rows run (tiny settings, CPU): the GPU case is the same code, not dead code."""

import importlib.util
from pathlib import Path

import pytest

from clip_inversion.rundir import read_manifest
from clip_inversion.toyworld.clutter import ClutterWorld

SPEED = Path(__file__).parents[1] / "benchmarks" / "speed.py"


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


def test_world_b_inverts_with_its_subject_and_is_scored_by_its_judge(monkeypatch, capsys):
    toy_judge = benchmark(monkeypatch, "toy_judge")
    seen = {}

    def judge_run(
        run_dir, judge, world, per_caption=False
    ):  # what the benchmark scored, recorded before its run dir goes
        seen.update(model=read_manifest(run_dir)[0].record["model"], judge=judge.model_name, world=world)
        return {"colour": 0.5, "shape": 0.5, "caption": 0.2, "judge_cosine": 0.1, "subject_cosine": 0.9, "images": 30}

    monkeypatch.setattr(toy_judge, "judge_run", judge_run)
    monkeypatch.setattr("sys.argv", ["toy_judge.py", "--world", "b", "--seeds", "0", "--", "--model.steps=1"])
    toy_judge.main()
    assert seen["model"] == "toy-clutter-subject" and seen["judge"] == "toy-clutter-judge"
    assert isinstance(seen["world"], ClutterWorld)
    row = capsys.readouterr().out.strip().split(" | ")
    assert row[0] == "| b" and row[4] == "50% [33, 67]" and row[5] == "20% [10, 37]"  # 15 and 6 of 30, Wilson


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
