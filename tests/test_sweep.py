"""Sweeps: two processes share the prompts, and an interrupted sweep resumes without redoing work."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torchvision.io import decode_image

from clip_inversion.cli import run
from clip_inversion.rundir import safe_name

CONFIGS = Path(__file__).parents[1] / "configs"
PROMPTS = [f"a {c} {s}" for c in ("red", "blue", "green", "yellow") for s in ("star", "circle", "cross")]


def sweep_args(tmp_path: Path, run_dir: Path, steps: int) -> list[str]:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    return [
        "fit",
        "--config",
        str(CONFIGS / "quickstart.yaml"),
        f"--model.steps={steps}",
        f"--data.prompts_file={prompts}",  # the run's prompts: the quickstart's own are not inverted
        "--data.batch_size=3",
        f"--trainer.default_root_dir={run_dir}",
        "--trainer.enable_progress_bar=false",
        "--trainer.accelerator=cpu",
    ]


def clean_env() -> dict[str, str]:
    """The environment without the rank variables an earlier in-process run of Lightning leaves behind
    (a child that inherits LOCAL_RANK believes it was launched by a cluster and waits for its peers)."""
    launched = {"MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "GLOBAL_RANK", "WORLD_SIZE"}
    return {k: v for k, v in os.environ.items() if k not in launched} | {"PYTHONUNBUFFERED": "1"}


def images_of(run_dir: Path) -> dict[str, torch.Tensor]:
    records = [json.loads(line) for line in (run_dir / "manifest.jsonl").read_text().splitlines()]
    ids = [r["id"] for r in records]
    assert len(ids) == len(set(ids)), "a prompt was written twice"
    return {r["id"]: decode_image(str(run_dir / r["image"])).float() / 255 for r in records}


def test_two_processes_invert_every_prompt_once_as_one_process_would(tmp_path):
    args = sweep_args(tmp_path, tmp_path / "two", steps=4)
    subprocess.run(
        [sys.executable, "-m", "clip_inversion", *args, "--trainer.devices=2"], check=True, env=clean_env(), timeout=600
    )
    two = images_of(tmp_path / "two")
    run([*sweep_args(tmp_path, tmp_path / "one", steps=4), "--trainer.devices=1"])
    one = images_of(tmp_path / "one")
    assert sorted(two) == sorted(one) and len(one) == len(PROMPTS)
    written = [json.loads(line)["prompt"] for line in (tmp_path / "two" / "manifest.jsonl").read_text().splitlines()]
    assert sorted(written) == sorted(PROMPTS)  # each prompt of the file once, none of the config's
    for prompt_id, image in one.items():
        # Same seeds, same batches: the same image up to PNG rounding (documented in docs/scaling.md).
        assert (two[prompt_id] - image).abs().max() <= 2 / 255, prompt_id
    (events,) = (tmp_path / "two" / "lightning_logs").rglob("events.out.tfevents.*")  # rank 0 logs for everyone
    scalars = EventAccumulator(str(events)).Reload().Tags()["scalars"]
    assert {f"cosine/{i}" for i in (f"{n:05d}_{safe_name(p)}" for n, p in enumerate(PROMPTS))} <= set(scalars)


def test_killed_sweep_resumes_without_redoing_finished_prompts(tmp_path):
    steps = 15
    args = sweep_args(tmp_path, tmp_path / "run", steps=steps)
    manifest = tmp_path / "run" / "manifest.jsonl"
    process = subprocess.Popen(
        [sys.executable, "-m", "clip_inversion", *args], stdout=subprocess.DEVNULL, env=clean_env()
    )
    deadline = time.time() + 300
    while time.time() < deadline and (not manifest.exists() or len(manifest.read_text().splitlines()) < 3):
        assert process.poll() is None, "the sweep ended before it could be killed"
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished_before = len(manifest.read_text().splitlines())
    assert 3 <= finished_before < len(PROMPTS)

    cli = run(args)  # the same command again
    images = images_of(tmp_path / "run")
    assert len(images) == len(PROMPTS)
    remaining_batches = (len(PROMPTS) - finished_before) // 3
    assert cli.trainer.global_step == steps * remaining_batches  # finished prompts were not recomputed
    leftovers = [p for p in (tmp_path / "run").rglob("*") if p.name.startswith(".tmp-")]
    assert not leftovers


def test_ckpt_path_last_resumes_in_the_middle_of_a_batch(tmp_path):
    run_dir = tmp_path / "run"
    often = tmp_path / "often.yaml"
    often.write_text(
        "trainer:\n  callbacks:\n    - class_path: clip_inversion.callbacks.RunCheckpoint\n"
        "      init_args: {every_n_train_steps: 5}\n"
    )
    args = [*sweep_args(tmp_path, run_dir, steps=8), "--config", str(often), "--data.prompts_file=null"]
    args.append("--data.prompts=[a red star, a blue cross]")
    interrupted = run([*args, "--trainer.max_steps=6"])  # as if preempted during step 7
    assert interrupted.trainer.global_step == 6 and not (run_dir / "manifest.jsonl").exists()
    last = run_dir / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 5

    resumed = run([*args, "--ckpt_path=last"])
    assert Path(resumed.trainer.ckpt_path) == last  # found in the run directory, not a new version folder
    assert resumed.trainer.global_step == 8
    assert len(images_of(run_dir)) == 2


def test_model_sweep_from_one_config_groups_outputs_by_model(tmp_path, capsys):
    from clip_inversion.sweep import main as sweep
    from clip_inversion.sweep import model_dir

    sweep_config = tmp_path / "sweep.yaml"
    sweep_config.write_text(f"sweep:\n  models: [toy-subject, toy-judge]\n  root: {tmp_path / 'models'}\n")
    common = ["--config", str(CONFIGS / "quickstart.yaml"), "--config", str(sweep_config)]
    with pytest.raises(SystemExit) as done:  # as the console script calls it: a clean exit, status 0
        sys.exit(sweep([*common, "--model.steps=2", "--data.prompts=[a star]", "--trainer.enable_progress_bar=false"]))
    assert done.value.code is None
    printed = capsys.readouterr().out
    for model in ("toy-subject", "toy-judge"):
        run_dir = model_dir(tmp_path / "models", model)
        assert f"{model}: {run_dir}" in printed
        (record,) = [json.loads(line) for line in (run_dir / "manifest.jsonl").read_text().splitlines()]
        assert record["model"] == model and (run_dir / record["image"]).is_file()
    # the same config with plain fit is refused rather than silently inverting one model
    from clip_inversion.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["fit", *common])
    assert exit_.value.code == 2 and "clip-inversion-sweep" in capsys.readouterr().err


def test_a_prompt_rerun_alone_gives_the_image_it_got_in_its_batch(tmp_path):
    lines = [{"id": f"p{i}", "prompt": p, "seed": 100 + i} for i, p in enumerate(PROMPTS[:3])]
    batch, alone = tmp_path / "batch.jsonl", tmp_path / "alone.jsonl"
    batch.write_text("".join(json.dumps(line) + "\n" for line in lines))
    alone.write_text(json.dumps(lines[1]) + "\n")
    common = ["fit", "--config", str(CONFIGS / "quickstart.yaml"), "--model.steps=5", "--data.prompts=null"]
    common.append("--trainer.enable_progress_bar=false")
    run(
        [*common, f"--data.prompts_file={batch}", "--data.batch_size=3", f"--trainer.default_root_dir={tmp_path / 'b'}"]
    )
    run(
        [*common, f"--data.prompts_file={alone}", "--data.batch_size=1", f"--trainer.default_root_dir={tmp_path / 'a'}"]
    )
    in_batch, by_itself = images_of(tmp_path / "b")["p1"], images_of(tmp_path / "a")["p1"]
    # Same start, same augmentation draws; only the batched arithmetic differs.
    assert (in_batch - by_itself).abs().max() <= 2 / 255


def test_two_long_model_paths_get_two_run_directories():
    from clip_inversion.sweep import model_dir

    stem = "local-dir:/a/very/long/path/where/the/toy/models/of/a/data/scale/study/were/trained/"
    small, large = model_dir("runs", stem + "small-data"), model_dir("runs", stem + "more-data")
    assert small != large and len(small.name) <= 80 and len(large.name) <= 80
    assert model_dir("runs", "toy-subject") == Path("runs/toy-subject")  # short names stay as they were
