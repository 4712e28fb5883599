"""Stopped anywhere: SIGTERM in the middle of a step, and SIGKILL at random moments, many times, to a sweep of
two processes. Each rerun of the same command finishes what is left; nothing is half-written or done twice."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torchvision.io import decode_image

from clip_inversion.data import RepeatBatch
from clip_inversion.rundir import append_records, read_records

ROOT = Path(__file__).parents[1]
LAUNCHED = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "GLOBAL_RANK", "RANK", "WORLD_SIZE")


def sweep(tmp_path: Path, n: int, steps: int) -> list[str]:
    """The user's command: ``n`` prompts, two processes of 2 prompts a batch, tiny images."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("".join(f"a photo of thing {i}\n" for i in range(n)))
    return [
        *(sys.executable, "-m", "clip_inversion", "fit", "--config", str(ROOT / "configs" / "quickstart.yaml")),
        *(f"--data.prompts_file={prompts}", f"--trainer.default_root_dir={tmp_path / 'run'}", "--data.batch_size=2"),
        *(f"--model.steps={steps}", "--model.copies=1", "--model.init_size=16", "--trainer.devices=2"),
        *("--trainer.accelerator=cpu", "--trainer.enable_progress_bar=false"),
    ]


def start(command: list[str]) -> subprocess.Popen:
    """In a session of its own, so that a signal reaches every process of the run, as a scheduler's does."""
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHED and not k.startswith("SLURM_")}
    return subprocess.Popen(
        command, env=env | {"OMP_NUM_THREADS": "1"}, start_new_session=True, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def lines(run_dir: Path) -> list[str]:
    path = run_dir / "manifest.jsonl"
    return path.read_text().splitlines() if path.exists() else []


def wait_for(process: subprocess.Popen, run_dir: Path, count: int, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while len(lines(run_dir)) < count:
        assert process.poll() is None and time.time() < deadline, process.communicate()[0]
        time.sleep(0.05)


def check(run_dir: Path, n: int | None = None) -> dict[str, int]:
    """The manifest's whole lines each name a distinct prompt whose PNG decodes; ``{id: image mtime}``."""
    records = read_records(run_dir)
    assert len({r["id"] for r in records}) == len(records), "a prompt was recorded twice"
    for r in records:
        assert decode_image(str(run_dir / r["image"])).shape == (3, 16, 16)
    assert not [p for p in run_dir.rglob(".tmp-*")], "a temporary file was left"
    if n is not None:
        assert sorted(r["id"] for r in records) == [f"{i:05d}" for i in range(n)]
    return {r["id"]: (run_dir / r["image"]).stat().st_mtime_ns for r in records}


def versions(run_dir: Path) -> set[Path]:
    """The run directory's TensorBoard versions (a run with nothing left to do adds none)."""
    return set((run_dir / "lightning_logs").glob("version_*"))


def steps_of_last_run(run_dir: Path, before: set[Path] | None = None) -> int:
    """Optimisation steps the latest run took, from its TensorBoard log (every batch's last step is logged);
    0 when no version was added since ``before``."""
    added = versions(run_dir) - (before or set())
    if not added:
        return 0
    latest = max(added, key=lambda d: int(d.name.split("_")[1]))
    (events,) = latest.glob("events.out.tfevents.*")
    return 1 + max(e.step for e in EventAccumulator(str(events)).Reload().Scalars("train/loss"))


def test_sigterm_in_the_middle_of_a_step_stops_cleanly_and_the_rerun_finishes(tmp_path):
    command, run_dir = sweep(tmp_path, n=8, steps=30), tmp_path / "run"
    process = start(command)
    wait_for(process, run_dir, 4)  # the first batch of both processes written, the second under way
    os.killpg(process.pid, signal.SIGTERM)
    output = process.communicate(timeout=120)[0]
    assert process.returncode == 0, output  # Lightning finishes the step, then stops
    before = check(run_dir)
    assert len(before) == 4  # the batch cut short was not recorded
    assert all(line.endswith("}") for line in lines(run_dir))

    process = start(command)
    assert "Resuming: 4 of 8 prompts already finished" in process.communicate(timeout=300)[0]
    after = check(run_dir, n=8)
    assert all(after[i] == mtime for i, mtime in before.items())  # finished images were not written again
    assert steps_of_last_run(run_dir) == 30  # the unfinished batch alone, from its start


def test_killed_at_random_moments_many_times_every_prompt_ends_exactly_once(tmp_path):
    seed = random.randrange(1000)
    rng = random.Random(seed)
    n, command, run_dir = 24, sweep(tmp_path, n=24, steps=10), tmp_path / "run"
    finished: dict[str, int] = {}
    for _ in range(3):
        process = start(command)
        wait_for(process, run_dir, len(finished) + rng.randrange(0, 5))  # 0-4 more prompts (maybe none) ...
        time.sleep(rng.uniform(0, 1.0))  # ... and a moment in a step, a write, a start-up
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        with (run_dir / "manifest.jsonl").open("a") as manifest:  # as a crash in the middle of its write leaves it
            manifest.write('{"id": "00000", "prompt": "a photo of thi')
        now = check(run_dir)
        assert all(now[i] == mtime for i, mtime in finished.items()), f"seed {seed}: a finished image was rewritten"
        finished = now
    before = versions(run_dir)  # the last kill may come after every prompt has finished: then no new version
    process = start(command)
    output = process.communicate(timeout=300)[0]
    assert process.returncode == 0, output
    final = check(run_dir, n=n)
    assert all(final[i] == mtime for i, mtime in finished.items()), f"seed {seed}: a finished prompt was redone"
    groups = [[f"{i:05d}" for i in range(start, start + 4)] for start in range(0, n, 4)]  # 2 processes x 2
    unfinished = sum(any(i not in finished for i in group) for group in groups)
    assert steps_of_last_run(run_dir, before) == 10 * unfinished, f"seed {seed}: finished prompts were inverted again"
    assert f"{n} of {n} prompts finished" in output


def test_a_line_cut_short_by_a_crash_is_dropped_before_the_next_is_appended(tmp_path):
    from clip_inversion.rundir import drop_cut_line

    append_records(tmp_path, [{"id": "a"}])
    with (tmp_path / "manifest.jsonl").open("a") as manifest:
        manifest.write('{"id": "b", "pro')
    drop_cut_line(tmp_path)
    append_records(tmp_path, [{"id": "c"}])
    assert read_records(tmp_path) == [{"id": "a"}, {"id": "c"}]
    assert (tmp_path / "manifest.jsonl").read_text() == json.dumps({"id": "a"}) + "\n" + json.dumps({"id": "c"}) + "\n"


def test_the_sampler_reads_the_epoch_set_after_its_iterator_was_made():
    """Resuming in epoch 3, Lightning makes the iterator, then sets the epoch: the batches are epoch 3's."""
    sampler = RepeatBatch(steps=4)
    draws = iter(sampler)
    sampler.set_epoch(3)
    assert list(draws) == [3, 3, 3, 3]
