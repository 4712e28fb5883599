"""The speed suite's rows run (tiny settings, CPU): the GPU case is the same code, not dead code."""

import importlib.util
from pathlib import Path

import pytest

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


def test_the_parameterisation_comparison_pools_seeds_and_compares_with_its_baseline(monkeypatch, capsys):
    benchmarks = str(SPEED.parent)
    monkeypatch.syspath_prepend(benchmarks)  # the script imports its sibling toy_judge.py
    spec = importlib.util.spec_from_file_location(
        "compare_parameterisations", SPEED.parent / "compare_parameterisations.py"
    )
    compare = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(compare)
    argv = ["compare_parameterisations.py", "--steps", "2", "--baseline-steps", "4", "--only", "pixels", "--seeds", "0"]
    monkeypatch.setattr("sys.argv", argv)
    compare.main()
    rows = [line.split(" | ") for line in capsys.readouterr().out.splitlines() if line.startswith("| pixels")]
    assert (rows[0][1], rows[0][5], rows[1][1]) == ("4", "-", "2")  # the baseline first, at its own steps
    pooled = [float(r[4].split("%")[0]) for r in rows]  # "53% [45, 60]"
    difference, interval = rows[1][5].split(" [")  # "+17 [+6, +28]"
    low, high = (float(x) for x in interval.rstrip("]").split(", "))
    assert abs(float(difference) - (pooled[1] - pooled[0])) <= 1 and low <= float(difference) <= high


def test_a_steps_operator_calls_do_not_grow_with_the_prompts(monkeypatch):
    monkeypatch.syspath_prepend(str(SPEED.parent))
    spec = importlib.util.spec_from_file_location("ops_per_step", SPEED.parent / "ops_per_step.py")
    ops = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ops)
    one, many = ops.count(1, warmup=2), ops.count(8, warmup=2)
    assert one > 100 and many <= 1.1 * one, (one, many)
