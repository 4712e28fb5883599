"""The cost of a sweep as it grows: 60, 600 and 6,000 prompts through ``clip-inversion fit``, one and two
processes, minimal inversions (the point is the cost around them, not the inversion).

python benchmarks/scale.py                       # 60, 600, 6000 prompts; 1 and 2 processes
python benchmarks/scale.py --sizes 60 600 --processes 1 --steps 1 --batch-size 50

Each run is the user's command (the quickstart config, the bundled toy model) in a fresh run directory, with
a timing callback added. Printed a run: wall time; start-up (process start to the first step); the marginal
time a prompt, from the run's own clock, over its prompts after the first tenth; the time a prompt outside
the optimisation (wall time less the time inside training steps, over the prompts: start-up, planning,
finding finished prompts, writing images, manifest lines, logs); the peak resident memory of the largest
process; the CPU time of all its processes; the time a prompt over the last tenth of its epochs against the
second tenth (above 1: later prompts cost more). Then a rerun of the largest finished sweep (it must say
"Nothing left to do"), the start-up of a 10,000-line prompts file, and the CPU time a prompt between sizes.
The last line is ``marginal_ratio=R memory_ratio=M`` (the largest size against the one before it, the most
processes).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
from itertools import pairwise
from pathlib import Path

from lightning import Callback, LightningModule, Trainer

ROOT = Path(__file__).resolve().parents[1]


class Timing(Callback):
    """Rank 0 writes ``{"t": seconds since the epoch, "event": ..., "done": prompts}`` lines to
    ``<run dir>/timing.jsonl`` at the end: when fitting starts, each step's start (before the module starts a
    new batch) and end (after the optimizer's step, before any other callback), each epoch's end."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.done = 0
        self.path: Path | None = None

    def _note(self, trainer: Trainer, event: str) -> None:
        if trainer.is_global_zero:
            self.lines.append(json.dumps({"t": time.time(), "event": event, "done": self.done}))

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        # First of the callbacks: a step's end is noted before the others draw grids or write files.
        trainer.callbacks.remove(self)
        trainer.callbacks.insert(0, self)

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.path = Path(trainer.default_root_dir) / "timing.jsonl"
        self._note(trainer, "fit")

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch, batch_idx: int) -> None:
        self._note(trainer, "step")

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int) -> None:
        self._note(trainer, "stepped")

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        batch = pl_module.prompts
        self.done += sum(batch.pending) * trainer.world_size if batch is not None else 0  # about: the last is short
        self._note(trainer, "epoch")

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.is_global_zero:
            self.path.write_text("".join(line + "\n" for line in self.lines))


def peak_rss(pid: int, stop: threading.Event, peaks: dict[int, int]) -> None:
    """Poll the peak resident memory (VmHWM) of ``pid`` and its descendants until ``stop``."""
    while not stop.is_set():
        for child in [pid, *descendants(pid)]:
            try:
                status = Path(f"/proc/{child}/status").read_text()
            except OSError:
                continue
            match = re.search(r"VmHWM:\s+(\d+) kB", status)
            if match:
                peaks[child] = max(peaks.get(child, 0), int(match.group(1)) * 1024)
        stop.wait(0.2)


def descendants(pid: int) -> list[int]:
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = [], [pid]
    while frontier:
        frontier = [p for p, parent in parents.items() if parent in frontier]
        found += frontier
    return found


def fit(args: argparse.Namespace, prompts: Path, run_dir: Path, processes: int, *extra: str) -> dict:
    """Run the command once; its wall time, peak memory, standard error and timing lines."""
    command = [sys.executable, "-m", "clip_inversion", "fit", "--config", str(ROOT / "configs" / "quickstart.yaml")]
    command += [f"--data.prompts_file={prompts}", f"--trainer.default_root_dir={run_dir}", "--trainer.accelerator=cpu"]
    command += [f"--model.steps={args.steps}", f"--model.init_size={args.size}", f"--model.copies={args.copies}"]
    command += [f"--data.batch_size={args.batch_size}", f"--trainer.devices={processes}", "--model.augmentations=[]"]
    command += ["--trainer.enable_progress_bar=false", "--trainer.callbacks+=scale.Timing", *extra]
    env = os.environ | {"PYTHONPATH": f"{ROOT}:{ROOT / 'benchmarks'}", "OMP_NUM_THREADS": str(args.threads)}
    start, before = time.time(), resource.getrusage(resource.RUSAGE_CHILDREN)
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    stop, peaks = threading.Event(), {}
    watcher = threading.Thread(target=peak_rss, args=(process.pid, stop, peaks))
    watcher.start()
    stderr = process.communicate()[1]
    wall = time.time() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime  # every process of the run
    stop.set()
    watcher.join()
    if process.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{stderr}")
    timing = run_dir / "timing.jsonl"
    lines = [json.loads(line) for line in timing.read_text().splitlines()] if timing.exists() else []
    peak = max(peaks.values(), default=0)
    return {"start": start, "wall": wall, "cpu": cpu, "peak": peak, "stderr": stderr, "lines": lines}


def measure(args: argparse.Namespace, tmp: Path, n: int, processes: int) -> dict:
    prompts = tmp / f"prompts-{n}.txt"
    prompts.write_text("".join(f"a photo of thing number {i}\n" for i in range(n)))
    run = fit(args, prompts, tmp / f"run-{n}-{processes}", processes)
    lines = run["lines"]
    first_step = next(line["t"] for line in lines if line["event"] == "step")
    inside = sum(b["t"] - a["t"] for a, b in pairwise(lines) if (a["event"], b["event"]) == ("step", "stepped"))
    epochs = [line for line in lines if line["event"] == "epoch"]
    tenth = next((e for e in epochs[:-1] if e["done"] >= n / 10), lines[0])  # the fit's start if one epoch
    marginal = (epochs[-1]["t"] - tenth["t"]) / (epochs[-1]["done"] - tenth["done"])
    tenths = [epochs[round(k * (len(epochs) - 1) / 10)] for k in (1, 2, 9, 10)]  # 2nd and last tenth of epochs
    early, late = ((b["t"] - a["t"]) / max(1, b["done"] - a["done"]) for a, b in (tenths[:2], tenths[2:]))
    result = {
        "n": n,
        "processes": processes,
        "wall_s": run["wall"],
        "startup_s": first_step - run["start"],
        "marginal_ms": 1000 * marginal,
        "late_over_early": late / early if len(epochs) > 10 else math.nan,  # too few epochs to tell
        "cpu_s": run["cpu"],
        "outside_ms": 1000 * (run["wall"] - inside) / n,
        "peak_mib": run["peak"] / 2**20,
        "prompts": prompts,
        "run_dir": tmp / f"run-{n}-{processes}",
    }
    print(
        f"{n:>6} prompts, {processes} process(es): {result['wall_s']:7.1f} s wall, "
        f"start-up {result['startup_s']:5.1f} s, "
        f"marginal {result['marginal_ms']:6.1f} ms a prompt, outside the optimisation {result['outside_ms']:6.1f} ms a "
        f"prompt, peak RSS {result['peak_mib']:6.0f} MiB, CPU {result['cpu_s']:6.1f} s, last tenth against "
        f"the second {result['late_over_early']:.2f}",
        flush=True,
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[60, 600, 6000])
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--size", type=int, default=16, help="image side in pixels")
    parser.add_argument("--copies", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=50, help="prompts a process inverts at once")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of every process")
    parser.add_argument("--start-lines", type=int, default=10_000, help="the prompts file whose start-up is timed")
    parser.add_argument("--work-dir", help="where the run directories go (deleted at the end)")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    print(f"{os.cpu_count()} CPUs, load {load:.1f} at the start, OMP_NUM_THREADS={args.threads}", flush=True)
    with tempfile.TemporaryDirectory(dir=args.work_dir) as tmp:
        tmp = Path(tmp)
        results = {(n, p): measure(args, tmp, n, p) for p in args.processes for n in args.sizes}
        largest = results[max(args.sizes), max(args.processes)]
        rerun = fit(args, largest["prompts"], largest["run_dir"], max(args.processes))
        assert "Nothing left to do" in rerun["stderr"], rerun["stderr"]
        print(
            f"rerun of the finished {max(args.sizes)}-prompt sweep: {rerun['wall']:.1f} s to 'Nothing left to do' "
            f"({rerun['cpu']:.1f} s of CPU)"
        )
        prompts = tmp / "start.txt"
        prompts.write_text("".join(f"a photo of thing number {i}\n" for i in range(args.start_lines)))
        first = fit(args, prompts, tmp / "start", 1, "--trainer.max_steps=1")
        start_up = next(line["t"] for line in first["lines"] if line["event"] == "step") - first["start"]
        print(f"{args.start_lines}-line prompts file: first step {start_up:.1f} s after the process started")
    for p in args.processes:
        sizes = sorted(args.sizes)
        cpu = [(results[b, p]["cpu_s"] - results[a, p]["cpu_s"]) / (b - a) for a, b in pairwise(sizes)]
        print(f"{p} process(es): CPU a prompt between sizes " + ", ".join(f"{1000 * c:.1f} ms" for c in cpu))
    big, small = sorted(args.sizes)[-1], sorted(args.sizes)[-2]
    most = max(args.processes)
    marginal = results[big, most]["marginal_ms"] / results[small, most]["marginal_ms"]
    memory = results[big, most]["peak_mib"] / results[small, most]["peak_mib"]
    print(f"load {os.getloadavg()[0]:.1f} at the end")
    print(f"marginal_ratio={marginal:.2f} memory_ratio={memory:.2f}")


if __name__ == "__main__":
    main()
