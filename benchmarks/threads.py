"""Wall time of the quickstart with torch's default CPU threads against one thread and the CLI's default.

    python benchmarks/threads.py --repeats 2

Runs ``clip-inversion fit --config configs/quickstart.yaml`` in a fresh process per setting, interleaved
``--repeats`` times, each into a fresh run directory, and prints one Markdown row a run: the setting, the wall
seconds (interpreter start and model loading included) and the 1-minute load average before it started (the
other jobs on the machine). Settings: ``torch`` (``torch.set_num_threads`` left at torch's default, one thread a
core, as before the CLI chose), ``1`` (``OMP_NUM_THREADS=1``) and ``cli`` (the CLI's default: the idle cores).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

QUICKSTART = Path(__file__).parents[1] / "configs" / "quickstart.yaml"
# torch's default thread count, which the CLI would otherwise lower: the OMP_NUM_THREADS it would have chosen
TORCH_DEFAULT = str(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
SETTINGS = {"torch": TORCH_DEFAULT, "1": "1", "cli": None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--only", nargs="+", choices=sorted(SETTINGS), default=list(SETTINGS))
    args = parser.parse_args()
    print("| threads | wall s | load before |\n| --- | --- | --- |")
    for _ in range(args.repeats):
        for name in args.only:
            env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
            if SETTINGS[name] is not None:
                env["OMP_NUM_THREADS"] = SETTINGS[name]
            load = os.getloadavg()[0]
            with tempfile.TemporaryDirectory() as run_dir:
                command = [sys.executable, "-m", "clip_inversion", "fit", "--config", str(QUICKSTART)]
                command += [f"--trainer.default_root_dir={run_dir}", "--trainer.enable_progress_bar=false"]
                start = time.perf_counter()
                subprocess.run(command, env=env, check=True, capture_output=True)
                print(f"| {name} | {time.perf_counter() - start:.1f} | {load:.1f} |", flush=True)


if __name__ == "__main__":
    main()
