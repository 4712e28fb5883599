"""The speed suite's rows run (tiny settings, CPU): the GPU case is the same code, not dead code."""

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import open_clip
import pytest
import torch
from PIL import Image
from scipy.stats import binomtest

from clip_inversion.errors import UsageError
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


@pytest.fixture(scope="module")
def gpu_check():
    sys.path.insert(0, str(SPEED.parent))  # it imports speed.py, its sibling
    try:
        spec = importlib.util.spec_from_file_location("gpu_check", SPEED.parent / "gpu_check.py")
        module = sys.modules["gpu_check"] = importlib.util.module_from_spec(spec)  # its dataclasses look it up
        spec.loader.exec_module(module)
    finally:
        sys.path.pop(0)
    return module


def test_the_gpu_check_runs_its_whole_path_on_the_cpu(tmp_path):
    command = [sys.executable, str(SPEED.parent / "gpu_check.py"), "--smoke", "--out", str(tmp_path)]
    out = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    last = re.fullmatch(r"prompts_per_hour=(\d+) mfu=n/a peak_gib=([0-9.]+)", out.stdout.strip().splitlines()[-1])
    assert last, out.stdout[-500:]
    results = json.loads((tmp_path / "gpu_check.json").read_text())
    assert results["failed"] == []
    measured = {(r["name"], r["batch"]) for r in results["rows"]}
    released = ("released loop (anomaly detection on)", 1)
    assert {released, ("paper", 1), ("paper", 4), ("paper", 8), ("fast", 8), ("fast + compile", 8)} <= measured
    assert results["largest"] == {"paper": 16, "fast": 16}  # doubled from 8 to the smoke's cap
    assert [r["devices"] for r in results["rows"] if "devices" in r] == [2]  # the user's command, 2 processes
    timed = [r for r in results["rows"] if "step_s" in r]
    best = max((r for r in timed if (r["name"], r["batch"]) != released), key=lambda r: r["prompts_per_hour"])
    assert int(last[1]) == round(best["prompts_per_hour"]) and float(last[2]) == round(best["peak_gib"], 2)
    table = (tmp_path / "gpu_check.md").read_text()
    assert sum(line.startswith(("| paper |", "| fast", "| released")) for line in table.splitlines()) == len(timed)


@pytest.mark.parametrize(
    ("name", "peak"),
    [("NVIDIA H100 80GB HBM3", 989e12), ("NVIDIA H100 PCIe", 756e12), ("NVIDIA H100 NVL", 835e12),
     ("NVIDIA H200", 989e12), ("NVIDIA A100-SXM4-80GB", 312e12), ("NVIDIA GeForce RTX 4090", None)],
)  # fmt: skip
def test_the_gpu_checks_peak_is_read_from_the_device_name(gpu_check, monkeypatch, name, peak):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: name)
    assert gpu_check.bf16_peak("cuda") == peak
    assert gpu_check.bf16_peak("cpu") is None


def test_a_gpu_check_row_counts_work_and_a_batch_that_does_not_fit_is_left_out(gpu_check, monkeypatch, tmp_path):
    check = gpu_check.Check(gpu_check.SMOKE, "cpu", tmp_path, tmp_path, "abc")
    check.results["flops"] = 2e9
    monkeypatch.setattr(gpu_check, "bf16_peak", lambda device: 1e12)
    row = check.measure("paper", 8, lambda: 0.5)
    assert row["prompts_per_hour"] == pytest.approx(3600 * 8 / (3400 * 0.5))  # the paper's 3400 steps a batch
    assert row["mfu"] == pytest.approx(2e9 * 8 / 0.5 / 1e12) and row["prompt_step_s"] == 0.0625

    def out_of_memory() -> float:
        raise torch.OutOfMemoryError("CUDA out of memory")

    def explained() -> float:  # as the module's step raises it: a UsageError from the OutOfMemoryError
        try:
            out_of_memory()
        except torch.OutOfMemoryError as e:
            raise UsageError("out of cuda memory inverting 64 prompts") from e

    def other() -> float:
        raise UsageError("--model.steps must be at least 1")

    assert check.measure("paper", 64, out_of_memory) is None and check.measure("paper", 64, explained) is None
    assert check.results["failed"] == []  # not fitting is no failure
    assert check.measure("paper", 32, other) is None  # a failure is listed, and the check goes on
    saved = json.loads((tmp_path / "gpu_check.json").read_text())
    assert [r["batch"] for r in saved["rows"]] == [8]
    assert saved["failed"] == [{"name": "paper", "batch": 32, "error": "UsageError: --model.steps must be at least 1"}]
    check.deadline = 0  # the budget spent: no row starts
    assert check.measure("paper", 1, lambda: pytest.fail("started after the budget")) is None
    assert check.results["failed"][-1]["error"].startswith("skipped")

    fits = []
    monkeypatch.setattr(check, "ours", lambda variant, batch: fits.append(batch) or (batch <= 24))
    check.plan = gpu_check.FULL
    assert check.largest("paper", 8) == 16 and fits == [16, 32]  # doubling until the first that does not fit
