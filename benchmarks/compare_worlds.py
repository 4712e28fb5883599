"""Choose an inversion recipe on a family of worlds, then confirm it against the released settings on fresh ones.

    python benchmarks/compare_worlds.py                                   # train, run what is missing, print
    python benchmarks/compare_worlds.py --no-run                          # print from the stored runs only
    python benchmarks/compare_worlds.py --candidates quickstart-5200 every-aug-32 --until 01:30

The protocol, each step on its own worlds (``clip_inversion/toyworld/family.py``; a world's subject and judge are
trained once into ``--cache`` by ``clip-inversion-train-toy --world-seed K --cache DIR``):

1. Choose, by successive halving on the tuning worlds (``--tune-worlds``, default 0-4): every candidate
   (``--candidates``, configs of ``configs/recipes/``, each at the released settings' work a prompt within 10%)
   inverts the 30 captions of the first ``--screen-worlds`` (default 2) with that world's subject at each
   ``--tune-seeds``, scored by that world's judge; the ``--finalists`` (default 3) with the best mean
   colour-and-shape accuracy there go on to the other tuning worlds, and the finalist with the best mean over all
   tuning worlds is chosen. ``--screen-worlds 5`` runs every candidate everywhere.
2. Confirm: the chosen recipe and the released settings (``configs/released-64px.yaml``) invert each fresh world's
   captions (``--fresh-worlds``, default 100-109, never used in choosing) at each ``--report-seeds``.

Prints the tuning table (each candidate's accuracy on each tuning world), then one Markdown row a fresh world: its
subject's and judge's towers, style, the judge's accuracy on the world's fresh renders, released and chosen
colour-and-shape accuracy and their paired difference with a 95% bootstrap interval over captions (seeds of a
caption kept together, ``compare_recipes.paired``); then the difference pooled over fresh worlds (the mean of the
worlds' differences) with a 95% bootstrap interval over worlds, and the bars: at least +15 points on 8 of 10 worlds,
the pooled interval's lower end above +10. Runs are stored as ``compare_recipes`` stores them
(``<out>/<recipe>/w<K>-seed<s>.json``, images beside), so a rerun runs only what is missing. Set
``OMP_NUM_THREADS=1`` on a busy machine.

Jobs started side by side with the same command share the work: each world's training and each run is claimed
(an ``flock`` on ``<path>.claim``, released when its job ends, however it ends), and a job leaves what another
holds to it, going on with the rest and waiting only when nothing else is left, so that no job chooses or prints
before every run it reads is stored: one core a job gives the tables in about half the time.
"""

from __future__ import annotations

import argparse
import fcntl
import math
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import torch
from compare_recipes import BASELINE, RECIPES, RELEASED_VIEWS, load, paired, run_once, run_path, signed, views
from toy_judge import ROOT

from clip_inversion.toyworld.cache import CAPTIONS_TXT, read_world, toy_world, train_world, world_dir

CANDIDATES = ["quickstart-5200", "affine-8-5200", "every-aug-16", "every-aug-32", "das", "implicit", "multiscale-32"]
TUNE_WORLDS, FRESH_WORLDS = list(range(5)), list(range(100, 110))
BAR_POINTS, BAR_SHARE, BAR_POOLED_LOW = 15, 0.8, 10  # +15 points on 8 of 10 worlds, pooled lower end +10
POLL_SECONDS = 10.0  # how often a job with only held work left looks again


def name(world: int) -> str:
    """A family world's name in run paths: ``w<K>``."""
    return f"w{world}"


def late(until: str | None) -> bool:
    return bool(until) and datetime.now(timezone.utc).strftime("%H:%M") >= until


def mean_caption(runs: dict[int, dict]) -> float:
    """Colour-and-shape accuracy over a world's runs (each run's share of captions read right), in [0, 1]."""
    return statistics.mean(r["caption"] for r in runs.values())


def scores(out: Path, candidates: list[str], worlds: list[int], seeds: list[int]) -> dict[str, dict[int, float]]:
    """``scores[recipe][world]``: the colour-and-shape accuracy of each stored (recipe, world), over its seeds."""
    stored = {r: {w: load(out, r, name(w), seeds) for w in worlds} for r in candidates}
    return {r: {w: mean_caption(runs) for w, runs in per.items() if runs} for r, per in stored.items()}


def best(out: Path, candidates: list[str], worlds: list[int], seeds: list[int], keep: int = 1) -> list[str] | None:
    """The ``keep`` candidates with the best mean accuracy over ``worlds``, best first, from stored runs only;
    ``None`` until every candidate has every one of those worlds at every seed."""
    complete = all(load(out, r, name(w), seeds).keys() == set(seeds) for r in candidates for w in worlds)
    if not complete or not candidates:
        return None
    per = scores(out, candidates, worlds, seeds)
    return sorted(candidates, key=lambda r: -statistics.mean(per[r].values()))[:keep]


def world_interval(diffs: list[float], resamples: int = 10_000) -> tuple[float, float, float]:
    """Mean of the worlds' differences with a 95% bootstrap interval over worlds: ``(mean, low, high)``."""
    d = torch.tensor(diffs, dtype=torch.float64)
    picks = torch.randint(len(d), (resamples, len(d)), generator=torch.Generator().manual_seed(0))
    low, high = torch.quantile(d[picks].mean(dim=1), torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    return d.mean().item(), low, high


@contextmanager
def claim(path: Path) -> Iterator[bool]:
    """Hold the work that writes ``path`` for this job: yields whether it is this job's (no other job holds it).

    The lock is an ``flock`` on ``<path>.claim`` beside ``path`` (a run's JSON, a world's folder); the kernel
    releases it when the file closes or the process dies.
    """
    lock = path.with_name(path.name + ".claim")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True


def ensure_world(cache: Path, world: int, until: str | None, run: bool) -> dict | None:
    """World ``world``'s record from the cache, trained first (or again, after a recipe changed) when ``run`` and
    not ``late``; ``None`` while another job trains it."""
    if not run or late(until):
        return read_world(cache, world)
    with claim(world_dir(cache, world)) as mine:
        if not mine:
            return None
        record = train_world(world, cache)  # answers from the cache when its recipe is today's
        if not record["cached"]:
            print(f"trained world {world}", flush=True)
        return record


def invert(out: Path, cache: Path, recipe: str, world: int, seed: int, until: str | None) -> bool:
    """One stored run of ``recipe`` on family world ``world`` at ``seed``, unless stored or ``late``; returns
    ``False`` while another job holds it."""
    path = run_path(out, recipe, name(world), seed)
    if path.is_file() or late(until):
        return True
    with claim(path) as mine:
        if mine and not path.is_file():
            captions = world_dir(cache, world) / CAPTIONS_TXT
            run_once(out, recipe, name(world), seed, toy=toy_world(cache, world), captions=captions)
        return mine


def judge_accuracy(record: dict) -> float:
    """The judge's colour-and-shape accuracy on fresh renders, among the captions inversions are judged among."""
    return record["judge"]["accuracy"]["judge_template"]["caption"]


def tuning_table(scores: dict, worlds: list[int], screening: list[int], seeds: list[int]) -> None:
    """Each candidate's accuracy on each tuning world, its mean over the screening worlds and over all of them."""
    print(f"Tuning worlds {', '.join(map(str, worlds))} (seeds {', '.join(map(str, seeds))}): colour and shape")
    print()
    header = " | ".join(f"world {w}" for w in worlds)
    print(f"| recipe | views a prompt | {header} | mean, worlds {', '.join(map(str, screening))} | mean |")
    print("| --- | --- | " + " | ".join("---" for _ in worlds) + " | --- | --- |")

    def mean(per: dict, among: list[int]) -> str:
        return f"{100 * statistics.mean(per[w] for w in among):.0f}%" if all(w in per for w in among) else "-"

    for recipe, per in scores.items():
        cells = " | ".join(f"{100 * per[w]:.0f}%" if w in per else "-" for w in worlds)
        print(f"| {recipe} | {views(RECIPES[recipe]):,} | {cells} | {mean(per, screening)} | {mean(per, worlds)} |")
    print()


def fresh_table(out: Path, cache: Path, chosen: str, worlds: list[int], seeds: list[int]) -> list[float]:
    """Print a row a fresh world with both recipes' runs; returns the worlds' mean differences, in [-1, 1]."""
    print(f"Fresh worlds (seeds {', '.join(map(str, seeds))}): {chosen} (chosen) against the released settings")
    print()
    print(
        "| world | subject | judge | style, size | judge accuracy on renders | released | chosen "
        "| chosen minus released [95% CI] |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    diffs = []
    for world in worlds:
        record = read_world(cache, world)
        runs, base = load(out, chosen, name(world), seeds), load(out, BASELINE, name(world), seeds)
        both = sorted(set(runs) & set(base))
        if record is None or not both:
            continue
        runs, base = {s: runs[s] for s in both}, {s: base[s] for s in both}
        mean, low, high = paired(runs, base, "caption")
        diffs.append(mean)
        w = record["world"]
        print(
            f"| {world} | {record['subject']['tower']['label']} | {record['judge']['tower']['label']} "
            f"| {w['style']}, {w['image_size']} px | {100 * judge_accuracy(record):.1f}% "
            f"| {100 * mean_caption(base):.0f}% | {100 * mean_caption(runs):.0f}% | {signed((mean, low, high))} |"
        )
    return diffs


def verdict(diffs: list[float], planned: int) -> None:
    """The pooled difference over worlds and whether the bars are reached."""
    print()
    if len(diffs) < 2:
        print(f"- pooled over fresh worlds: {len(diffs)} of {planned} worlds run; no pooled interval")
        return
    mean, low, high = world_interval(diffs)
    ahead, needed = sum(d >= BAR_POINTS / 100 for d in diffs), math.ceil(BAR_SHARE * planned - 1e-9)
    reached = ahead >= needed and 100 * low > BAR_POOLED_LOW and len(diffs) >= planned
    print(
        f"- pooled over {len(diffs)} of {planned} fresh worlds: chosen minus released {signed((mean, low, high))} "
        f"(95% bootstrap over worlds); at least +{BAR_POINTS} points on {ahead} of {len(diffs)} worlds"
    )
    print(
        f"- bars (+{BAR_POINTS} on {needed} of {planned} worlds, pooled lower end above +{BAR_POOLED_LOW}): "
        + ("reached" if reached else "not reached")
    )


def stage(args: argparse.Namespace, worlds: list[int], seeds: list[int], recipes: list[str], run: bool) -> None:
    """Train the worlds and run every recipe on each at each seed (on worlds already trained first), leaving what
    another job holds to it; returns once every run is stored (or ``late``), looking again every
    ``POLL_SECONDS`` while only held work is left."""
    while run and not late(args.until):
        held = False
        for world in sorted(worlds, key=lambda w: read_world(args.cache, w) is None):  # trained worlds first
            if ensure_world(args.cache, world, args.until, run) is None:
                held = True
                continue
            for seed in seeds:
                for recipe in recipes:
                    held |= not invert(args.out, args.cache, recipe, world, seed, args.until)
        if not held:
            return
        time.sleep(POLL_SECONDS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", nargs="+", choices=sorted(set(RECIPES) - {BASELINE}), default=CANDIDATES)
    parser.add_argument("--tune-worlds", type=int, nargs="+", default=TUNE_WORLDS)
    parser.add_argument("--fresh-worlds", type=int, nargs="+", default=FRESH_WORLDS)
    parser.add_argument("--tune-seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--screen-worlds", type=int, default=2, help="tuning worlds every candidate runs on")
    parser.add_argument("--finalists", type=int, default=3, help="candidates that go on to the other tuning worlds")
    parser.add_argument("--report-seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--cache", type=Path, default=ROOT / "runs" / "worlds", help="trained worlds (DIR/world-K)")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "compare-worlds", help="where runs are stored")
    parser.add_argument("--no-run", action="store_true", help="print from the stored runs only")
    parser.add_argument("--until", help="start no training or run after this UTC time, HH:MM")
    args = parser.parse_args()
    if set(args.tune_worlds) & set(args.fresh_worlds):
        parser.error("a fresh world must take no part in choosing: --tune-worlds and --fresh-worlds overlap")
    for recipe in [BASELINE, *args.candidates]:
        work = views(RECIPES[recipe])
        if abs(work - RELEASED_VIEWS) > 0.1 * RELEASED_VIEWS:
            parser.error(f"{recipe}: {work} views a prompt, not within 10% of the released {RELEASED_VIEWS}")
    run = not args.no_run
    # 1. choose: every candidate on the screening worlds, then the finalists on the other tuning worlds
    screening, rest = args.tune_worlds[: args.screen_worlds], args.tune_worlds[args.screen_worlds :]
    stage(args, screening, args.tune_seeds, args.candidates, run)
    finalists = best(args.out, args.candidates, screening, args.tune_seeds, keep=args.finalists)
    if finalists is not None:
        stage(args, rest, args.tune_seeds, finalists, run)
    chosen = finalists and best(args.out, finalists, args.tune_worlds, args.tune_seeds)
    table = scores(args.out, args.candidates, args.tune_worlds, args.tune_seeds)
    tuning_table(table, args.tune_worlds, screening, args.tune_seeds)
    if not chosen:
        print("- the tuning runs are not all stored: nothing chosen, no fresh world run")
        return
    chosen = chosen[0]
    if rest:
        print(f"- finalists on tuning worlds {', '.join(map(str, screening))}: {', '.join(finalists)}")
    print(f"- chosen on tuning worlds {', '.join(map(str, args.tune_worlds))}: {chosen}")
    print()
    # 2. confirm on fresh worlds: the released settings and the chosen recipe, world by world
    stage(args, args.fresh_worlds, args.report_seeds, [BASELINE, chosen], run)
    diffs = fresh_table(args.out, args.cache, chosen, args.fresh_worlds, args.report_seeds)
    verdict(diffs, len(args.fresh_worlds))


if __name__ == "__main__":
    main()
