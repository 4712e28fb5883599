"""Invert every colour-shape caption of the toy world and score the images with the toy judge.

    python benchmarks/toy_judge.py --seeds 0 1 2                       # quickstart settings
    python benchmarks/toy_judge.py --seeds 0 1 2 -- --model.tv=0.005   # any CLI override after --

Prints one Markdown row: the judge's zero-shot accuracy among the world's 30 captions (colour; colour and
shape), the judge's and the subject's mean cosine to the prompt, as mean (min-max) over seeds.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from clip_inversion.cli import run
from clip_inversion.toyworld.evaluate import judge_run

ROOT = Path(__file__).parents[1]


def judge_world(seed: int, config: str | Path, args: list[str] = ()) -> tuple[dict[str, float], float]:
    """Invert the world's 30 colour-shape captions (2 batches of 15) and score them with the toy judge.

    Args:
        seed: ``--data.seed``: every start image and augmentation draw.
        config: the clip-inversion config, for example ``configs/quickstart.yaml``.
        args: more ``clip-inversion fit`` options, applied after the config.

    Returns:
        The judge's scores (:func:`judge_run`) and the run's wall time in seconds, model loading included.
    """
    with tempfile.TemporaryDirectory() as run_dir:
        start = time.perf_counter()
        run(
            [
                "fit",
                "--config",
                str(config),
                "--data.prompts=null",
                f"--data.prompts_file={ROOT / 'configs' / 'prompts' / 'toy-world.txt'}",
                "--data.batch_size=15",
                f"--data.seed={seed}",
                f"--trainer.default_root_dir={run_dir}",
                "--trainer.enable_progress_bar=false",
                "--trainer.logger=false",
                *args,
            ]
        )
        seconds = time.perf_counter() - start
        return judge_run(run_dir), seconds


def cell(scores: list[dict[str, float]], key: str, percent: bool, decimals: int = 2) -> str:
    """One Markdown cell: the mean of ``key`` over seeds, with (min-max) when there are several."""
    values = [s[key] * (100 if percent else 1) for s in scores]
    fmt = "{:.0f}" if percent else f"{{:.{decimals}f}}"
    spread = f" ({fmt.format(min(values))}-{fmt.format(max(values))})" if len(values) > 1 else ""
    return fmt.format(statistics.mean(values)) + ("%" if percent else "") + spread


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "quickstart.yaml"))
    parser.add_argument("overrides", nargs="*", help="CLI arguments for clip-inversion, after --")
    args = parser.parse_args()
    runs = [judge_world(seed, args.config, args.overrides) for seed in args.seeds]
    scores, seconds = [r[0] for r in runs], [r[1] for r in runs]
    overrides = " ".join(args.overrides) or "quickstart settings"
    print(
        f"| {overrides} | {cell(scores, 'colour', True)} | {cell(scores, 'caption', True)} "
        f"| {cell(scores, 'judge_cosine', False)} | {cell(scores, 'subject_cosine', False)} | {len(args.seeds)} "
        f"| {statistics.mean(seconds):.0f} s |"
    )


if __name__ == "__main__":
    main()
