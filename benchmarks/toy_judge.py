"""Invert every colour-shape caption of a toy world and score the images with that world's judge.

    python benchmarks/toy_judge.py --seeds 0 1 2                       # world A, quickstart settings
    python benchmarks/toy_judge.py --world b --seeds 0 1 2 3 4         # world B: its ViT subject and judge
    python benchmarks/toy_judge.py --seeds 0 1 2 -- --model.tv=0.005   # any CLI override after --
    python benchmarks/toy_judge.py --seeds 0 1 -- --config configs/released-64px.yaml

Prints one Markdown row: the judge's zero-shot accuracy among the world's 30 captions (colour; colour and
shape) as mean (min-max) over seeds, then pooled over seeds with 95% Wilson intervals, the judge's and
the subject's mean cosine to the prompt, as mean (min-max) over seeds.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from clip_inversion.cli import run
from clip_inversion.core.clip import CLIPSpec
from clip_inversion.studies.probes import wilson_interval
from clip_inversion.toyworld.evaluate import WORLDS, ToyWorld, judge_run

ROOT = Path(__file__).parents[1]
CAPTIONS = ROOT / "configs" / "prompts" / "toy-world.txt"  # every colour-shape caption of the worlds


def judge_world(
    seed: int,
    config: str | Path,
    args: list[str] = (),
    world: str | ToyWorld = "a",
    per_caption: bool = False,
    keep: str | Path | None = None,
    captions: str | Path = CAPTIONS,
) -> tuple[dict[str, float], float]:
    """Invert a world's 30 colour-shape captions (2 batches of 15) with its subject; score them with its judge.

    Args:
        seed: ``--data.seed``: every start image and augmentation draw.
        config: the clip-inversion config, for example ``configs/quickstart.yaml``.
        args: more ``clip-inversion fit`` options, applied after the config and the world's subject.
        world: a key of ``WORLDS``: ``a`` (the project's world) or ``b`` (the held-out clutter world); or a
            ``ToyWorld`` (a family world's, ``toyworld.cache.toy_world``).
        per_caption: also each caption's scores (:func:`judge_run`'s ``per_caption``).
        keep: the run directory to write and keep (its images and ``manifest.jsonl``; its checkpoints are
            removed); default: a temporary one, removed.
        captions: the prompts file of the world's captions (default: worlds A and B's 30).

    Returns:
        The judge's scores (:func:`judge_run`) and the run's wall time in seconds, model loading included.
    """
    toy = WORLDS[world] if isinstance(world, str) else world
    with contextlib.nullcontext(str(keep)) if keep else tempfile.TemporaryDirectory() as run_dir:
        start = time.perf_counter()
        run(
            [
                "fit",
                "--config",
                str(config),
                f"--model.clip.model_name={toy.subject}",
                "--data.prompts=null",
                f"--data.prompts_file={captions}",
                "--data.batch_size=15",
                f"--data.seed={seed}",
                f"--trainer.default_root_dir={run_dir}",
                "--trainer.enable_progress_bar=false",
                "--trainer.logger=false",
                *args,
            ]
        )
        seconds = time.perf_counter() - start
        shutil.rmtree(Path(run_dir) / "checkpoints", ignore_errors=True)
        return judge_run(run_dir, CLIPSpec(toy.judge), toy.world, per_caption), seconds


def cell(scores: list[dict[str, float]], key: str, percent: bool, decimals: int = 2) -> str:
    """One Markdown cell: the mean of ``key`` over seeds, with (min-max) when there are several."""
    values = [s[key] * (100 if percent else 1) for s in scores]
    fmt = "{:.0f}" if percent else f"{{:.{decimals}f}}"
    spread = f" ({fmt.format(min(values))}-{fmt.format(max(values))})" if len(values) > 1 else ""
    return fmt.format(statistics.mean(values)) + ("%" if percent else "") + spread


def pooled_count(scores: list[dict[str, float]], key: str) -> tuple[int, int]:
    """Images read right under ``key`` and images, summed over seeds."""
    return sum(round(s[key] * s["images"]) for s in scores), sum(int(s["images"]) for s in scores)


def pooled(scores: list[dict[str, float]], key: str) -> str:
    """One Markdown cell: ``key`` pooled over seeds' images, as a percentage with its 95% Wilson interval."""
    k, n = pooled_count(scores, key)
    low, high = wilson_interval(k, n)
    return f"{100 * k / n:.0f}% [{100 * low:.0f}, {100 * high:.0f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", choices=sorted(WORLDS), default="a", help="a: the project's world; b: held out")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "quickstart.yaml"))
    parser.add_argument("overrides", nargs="*", help="CLI arguments for clip-inversion, after --")
    args = parser.parse_args()
    runs = []
    for seed in args.seeds:
        runs.append(judge_world(seed, args.config, args.overrides, args.world))
        print(f"seed {seed}: {runs[-1][0]}", file=sys.stderr, flush=True)
    scores, seconds = [r[0] for r in runs], [r[1] for r in runs]
    overrides = " ".join(args.overrides) or "quickstart settings"
    print(
        f"| {args.world} | {overrides} | {cell(scores, 'colour', True)} | {cell(scores, 'caption', True)} "
        f"| {pooled(scores, 'colour')} | {pooled(scores, 'caption')} "
        f"| {cell(scores, 'judge_cosine', False)} | {cell(scores, 'subject_cosine', False)} | {len(args.seeds)} "
        f"| {statistics.mean(seconds):.0f} s |"
    )


if __name__ == "__main__":
    main()
