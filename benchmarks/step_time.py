"""Time a step of the user's command under settings that should only change its speed, on this machine.

    OMP_NUM_THREADS=1 python benchmarks/step_time.py --steps 40 --repeats 2 \\
        --variant eager= --variant compiled=--model.compile=true
    OMP_NUM_THREADS=1 python benchmarks/step_time.py --steps 40 --repeats 2 \\
        --variant plain= --variant fast=--config=configs/fast.yaml

Each variant runs ``clip-inversion fit --config configs/quickstart.yaml <variant's options> --model.steps=N``
through ``clip_inversion.cli.main`` in a fresh process and a fresh run directory, the variants interleaved
``--repeats`` times. Prints one Markdown row a run: the variant, the seconds to the end of the first step
(model loading and compilation included), the median wall and process CPU seconds of the steps after the first
``--warmup`` ones (CPU seconds, with one thread, are the figure least disturbed by other jobs), the precision
the run chose, and the 1-minute load average before it (the machine's other jobs). ``--base`` replaces the
quickstart config (several options in one string). A variant with ``--as-if-amx`` keeps
``bf16-mixed`` on a CPU without AMX, where the CLI would run ``32-true``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time


def worker(args: list[str]) -> None:
    """Run the CLI in this process; print the end time of every step as JSON on the last line. With
    ``--as-if-amx`` among them, the CLI takes this CPU for one with AMX and keeps ``bf16-mixed``."""
    import torch

    if "--as-if-amx" in args:
        import clip_inversion.precision

        args = [a for a in args if a != "--as-if-amx"]
        clip_inversion.precision.cpu_flags = lambda: {"amx_bf16"}

    from clip_inversion.cli import main
    from clip_inversion.module import CLIPInversion

    ends: list[tuple[float, float]] = []
    precision: list[str] = []

    def on_train_batch_end(self, *unused) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        ends.append((time.perf_counter(), time.process_time()))
        precision[:] = [self.trainer.precision]

    CLIPInversion.on_train_batch_end = on_train_batch_end
    start = (time.perf_counter(), time.process_time())
    main(args)
    print(json.dumps({"start": start, "ends": ends, "precision": precision[0]}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=3, help="steps left out of the median")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--base", default="--config configs/quickstart.yaml")
    parser.add_argument("--variant", action="append", required=True, help="NAME=OPTIONS (OPTIONS may be empty)")
    parser.add_argument("--worker", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        return worker(args.worker)
    variants = dict(v.split("=", 1) for v in args.variant)
    print(
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, {args.steps} steps, median after {args.warmup}"
    )
    print("| variant | to first step s | step s | step CPU s | precision | load before |")
    print("| --- | --- | --- | --- | --- | --- |")
    for _ in range(args.repeats):
        for name, options in variants.items():
            load = os.getloadavg()[0]
            with tempfile.TemporaryDirectory() as run_dir:
                command = ["fit", *shlex.split(args.base), *shlex.split(options), f"--model.steps={args.steps}"]
                command += [f"--trainer.default_root_dir={run_dir}", "--trainer.enable_progress_bar=false"]
                done = subprocess.run(
                    [sys.executable, __file__, "--variant", "x=", "--worker", *command],
                    capture_output=True,
                    text=True,
                    check=True,
                )
            times = json.loads(done.stdout.splitlines()[-1])
            ends = [times["start"], *times["ends"]]
            steps = [(b[0] - a[0], b[1] - a[1]) for a, b in itertools.pairwise(ends)]
            wall, cpu = (statistics.median(s[i] for s in steps[args.warmup :]) for i in (0, 1))
            print(
                f"| {name} | {steps[0][0]:.1f} | {wall:.3f} | {cpu:.3f} | {times['precision']} | {load:.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
