"""Compare inversion recipes at equal work on both toy worlds, each paired with the released settings.

    python benchmarks/compare_recipes.py                        # run what is missing, then print the table
    python benchmarks/compare_recipes.py --recipes released das --worlds b --report-seeds 0 1
    python benchmarks/compare_recipes.py --no-run               # the table from the stored runs only

A recipe is a config composed over ``configs/quickstart.yaml`` that sets every setting of its claim:
``configs/released-64px.yaml`` (the released settings, the baseline) and ``configs/recipes/*.yaml``. Each must
do the released settings' work a prompt within 10% (copies x steps, 13 x 400 = 5,200 views). A run inverts a
world's 30 captions with the world's subject at one ``--data.seed`` and scores every caption with the world's
judge; it is stored as JSON in ``--out`` (``<recipe>/<world>-seed<k>.json``, its images and manifest beside it in
``<recipe>/<world>-seed<k>/``), so a rerun only runs what is missing. The candidates' tuning seeds
(``--tune-seeds``) run first, then every named recipe's reporting seeds (``--report-seeds``): once the tuning runs
are stored, ``--recipes CHOSEN`` reports the chosen recipe alone.

The protocol: choose the candidate with the best colour-and-shape accuracy on one world's tuning seeds, report
it on the other world's reporting seeds against the released settings; then the reverse. A recipe counts as
better only where it wins in both directions (the lower end of its interval above zero). Prints one Markdown
table (every recipe on every world's reporting seeds) and the protocol's two lines. Accuracies pooled over
seeds carry 95% Wilson intervals; differences with the released settings are paired by caption and seed, with
a 95% bootstrap interval over the 30 captions (10,000 resamples). CLIPSIM and FID come from the evaluation suite
(``clip-inversion-evaluate``, the world's judge, FID on its image features) for the runs that kept their images,
pooled over the seeds that every row kept, against ``REAL_PER_CAPTION`` renders of each caption from the world
itself (``<out>/real/<world>/``), with the suite's 95% intervals over captions; its reports go to
``<out>/report/<world>/``. Set ``OMP_NUM_THREADS=1`` on a busy machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
from datetime import datetime, timezone
from pathlib import Path

import torch
import yaml
from toy_judge import CAPTIONS, ROOT, judge_world  # benchmarks/ is on the path when a script of it runs

from clip_inversion.data import read_prompts
from clip_inversion.rundir import MANIFEST, read_records, write_json
from clip_inversion.studies.evaluate import Settings, evaluate
from clip_inversion.studies.probes import wilson_interval
from clip_inversion.toyworld.evaluate import WORLDS, ToyWorld
from clip_inversion.toyworld.real import write_real

BASELINE = "released"
RECIPES = {
    BASELINE: ROOT / "configs" / "released-64px.yaml",
    **{p.stem: p for p in sorted((ROOT / "configs" / "recipes").glob("*.yaml"))},
}
WORLD_RECIPES = [BASELINE, "das", "implicit", "quickstart-5200"]  # compared on worlds A and B by default
RELEASED_VIEWS = 13 * 400
REAL_PER_CAPTION = 4


def views(config: Path) -> int:
    """Copies x steps a prompt, as the recipe's config sets them."""
    model = yaml.safe_load(config.read_text())["model"]
    return model["copies"] * model["steps"]


def run_path(out: Path, recipe: str, world: str, seed: int) -> Path:
    return out / recipe / f"{world}-seed{seed}.json"


def run_once(
    out: Path, recipe: str, world: str, seed: int, toy: ToyWorld | None = None, captions: Path = CAPTIONS
) -> None:
    """Invert and judge one (recipe, world, seed) and store its per-caption scores.

    ``world`` names the run (``a``, ``b`` or a family world's ``w<K>``); ``toy`` and ``captions`` give a world that
    is not in ``WORLDS`` (a family world's, with its own captions file).
    """
    path = run_path(out, recipe, world, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    config, args = ROOT / "configs" / "quickstart.yaml", ["--config", str(RECIPES[recipe])]
    scores, seconds = judge_world(
        seed, config, args, toy or world, per_caption=True, keep=path.with_suffix(""), captions=captions
    )
    record = {"recipe": recipe, "world": world, "seed": seed, "seconds": seconds, **scores}
    write_json(path, record)  # whole or absent: a job beside this one may read it at any moment
    print(f"{recipe} world {world} seed {seed}: {scores['caption']:.2f} colour and shape, {seconds:.0f} s", flush=True)


def load(out: Path, recipe: str, world: str, seeds: list[int]) -> dict[int, dict]:
    """The stored runs of ``recipe`` on ``world`` among ``seeds``, by seed."""
    paths = {s: run_path(out, recipe, world, s) for s in seeds}
    return {s: json.loads(p.read_text()) for s, p in paths.items() if p.is_file()}


def pooled(runs: dict[int, dict], key: str) -> str:
    """Pooled accuracy over the runs' images with its 95% Wilson interval."""
    values = [c[key] for r in runs.values() for c in r["per_caption"].values()]
    k, n = round(sum(values)), len(values)
    low, high = wilson_interval(k, n)
    return f"{100 * k / n:.0f}% [{100 * low:.0f}, {100 * high:.0f}]"


def paired(runs: dict[int, dict], base: dict[int, dict], key: str, resamples: int = 10_000) -> tuple[float, ...]:
    """Mean difference ``runs - base`` over the captions and seeds both have, with a 95% bootstrap interval
    over captions (the seeds of a resampled caption stay together). Returns ``(mean, low, high)``."""
    seeds = sorted(set(runs) & set(base))
    captions = sorted(set.intersection(*(set(runs[s]["per_caption"]) & set(base[s]["per_caption"]) for s in seeds)))
    diff = torch.tensor(
        [[runs[s]["per_caption"][c][key] - base[s]["per_caption"][c][key] for s in seeds] for c in captions]
    ).mean(dim=1)  # (captions,): each caption's mean difference over seeds
    picks = torch.randint(len(diff), (resamples, len(diff)), generator=torch.Generator().manual_seed(0))
    means = diff[picks].mean(dim=1)
    low, high = torch.quantile(means, torch.tensor([0.025, 0.975])).tolist()
    return diff.mean().item(), low, high


def evaluation(out: Path, recipes: list[str], world: str, seeds: list[int]) -> dict[str, dict]:
    """CLIPSIM and FID of each recipe's kept runs on ``world`` among ``seeds``, pooled, from the evaluation suite.

    The seeds that every recipe with kept runs kept are pooled, a recipe's runs listed in one manifest
    (``<out>/pooled/<world>/<recipe>/``), so that every row's FID compares as many images (up to 150: 5 seeds x 30
    captions) with the 120 real ones on the judge's 64 features; its 95% interval resamples captions.

    Returns:
        ``{recipe: row}``: the evaluation suite's row (``clipsim``, ``fid`` and their ``_low``/``_high``) with
        ``seeds``, the seeds pooled; recipes without kept runs are left out, and every recipe when no seed is
        common to them.
    """
    toy, real = WORLDS[world], out / "real" / world
    folder = {(r, s): run_path(out, r, world, s).with_suffix("") for r in recipes for s in seeds}
    kept = {r: {s for s in seeds if (folder[r, s] / MANIFEST).is_file()} for r in recipes}
    kept = {r: k for r, k in kept.items() if k}
    common = sorted(set.intersection(*kept.values())) if kept else []  # FID depends on the number of images
    if not common:
        return {}
    pools = {recipe: out / "pooled" / world / recipe for recipe in kept}
    for recipe, pool in pools.items():
        runs = [folder[recipe, s] for s in common]
        records = [{**r, "image": str(f.resolve() / r["image"])} for f in runs for r in read_records(f)]
        pool.mkdir(parents=True, exist_ok=True)
        (pool / MANIFEST).write_text("".join(json.dumps(r) + "\n" for r in records))
    if not (real / MANIFEST).is_file():
        write_real([p.text for p in read_prompts(CAPTIONS)], real, REAL_PER_CAPTION, seed=0, world=toy.world)
    settings = Settings(real=str(real), judge=toy.judge, out=str(out / "report" / world))
    rows = evaluate(list(pools.values()), settings)
    return {recipe: {**row, "seeds": common} for recipe, row in zip(pools, rows)}


def interval(row: dict | None, key: str, decimals: int) -> str:
    """``value [low, high] (seeds)`` of an evaluation row, ``-`` without one."""
    if row is None:
        return "-"
    low, value, high = (f"{row[k]:.{decimals}f}" for k in (f"{key}_low", key, f"{key}_high"))
    return f"{value} [{low}, {high}] ({','.join(map(str, row['seeds']))})"


def signed(values: tuple[float, ...]) -> str:
    mean, low, high = (100 * v for v in values)
    return f"{mean:+.0f} [{low:+.0f}, {high:+.0f}]"


def table(out: Path, recipes: list[str], worlds: list[str], seeds: list[int]) -> None:
    print(
        "| world | recipe | views a prompt | seeds | judge: colour | judge: colour and shape (per seed) "
        "| colour and shape minus released [95% paired CI] | colour minus released | judge cosine "
        "| CLIPSIM [95% CI] (seeds) | FID on judge features [95% CI] (seeds) | s a run |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for world in worlds:
        base = load(out, BASELINE, world, seeds)
        suite = evaluation(out, recipes, world, seeds)
        for recipe in recipes:
            runs = load(out, recipe, world, seeds)
            if not runs:
                continue
            per_seed = ", ".join(f"{100 * r['caption']:.0f}" for r in runs.values())
            both = set(runs) & set(base)
            diffs = ["-", "-"]
            if recipe != BASELINE and both:
                diffs = [signed(paired(runs, base, key)) for key in ("caption", "colour")]
            print(
                f"| {world.upper()} | {recipe} | {views(RECIPES[recipe]):,} | {','.join(map(str, sorted(runs)))} "
                f"| {pooled(runs, 'colour')} | {pooled(runs, 'caption')} ({per_seed}) | {diffs[0]} | {diffs[1]} "
                f"| {statistics.mean(r['judge_cosine'] for r in runs.values()):.2f} "
                f"| {interval(suite.get(recipe), 'clipsim', 1)} | {interval(suite.get(recipe), 'fid', 2)} "
                f"| {statistics.mean(r['seconds'] for r in runs.values()):.0f} |"
            )


def protocol(out: Path, recipes: list[str], tune: list[int], report: list[int]) -> None:
    """Choose on one world's tuning seeds, report on the other's reporting seeds; both directions."""
    candidates = [r for r in recipes if r != BASELINE]
    for chosen_on, reported_on in (("a", "b"), ("b", "a")):
        tuned = {r: load(out, r, chosen_on, tune) for r in candidates}
        tuned = {r: runs for r, runs in tuned.items() if runs and len(runs) == len(tune)}
        if not tuned:
            print(f"- tuned on world {chosen_on.upper()}: no tuning runs (seeds {tune}); nothing chosen")
            continue
        best = max(tuned, key=lambda r: statistics.mean(x["caption"] for x in tuned[r].values()))
        runs, base = load(out, best, reported_on, report), load(out, BASELINE, reported_on, report)
        if not set(runs) & set(base):
            print(f"- tuned on world {chosen_on.upper()}: {best} chosen; not yet run on world {reported_on.upper()}")
            continue
        mean, low, high = paired(runs, base, "caption")
        verdict = "wins" if low > 0 else "does not win"
        print(
            f"- chosen on world {chosen_on.upper()} (seeds {','.join(map(str, tune))}): {best}; on world "
            f"{reported_on.upper()} (seeds {','.join(map(str, sorted(set(runs) & set(base))))}) colour and shape "
            f"minus released {signed((mean, low, high))}: {verdict}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", nargs="+", choices=sorted(RECIPES), default=WORLD_RECIPES)
    parser.add_argument("--worlds", nargs="+", choices=sorted(WORLDS), default=sorted(WORLDS))
    parser.add_argument("--report-seeds", type=int, nargs="*", default=[0, 1, 2, 3, 4], help="none: choose only")
    parser.add_argument("--tune-seeds", type=int, nargs="*", default=[10, 11])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "compare-recipes", help="where runs are stored")
    parser.add_argument("--no-run", action="store_true", help="print the table from the stored runs only")
    parser.add_argument("--until", help="start no run after this UTC time, HH:MM (a shared machine's deadline)")
    args = parser.parse_args()
    recipes = [BASELINE, *(r for r in args.recipes if r != BASELINE)]
    for recipe in recipes:
        work = views(RECIPES[recipe])
        if abs(work - RELEASED_VIEWS) > 0.1 * RELEASED_VIEWS:
            parser.error(f"{recipe}: {work} views a prompt, not within 10% of the released {RELEASED_VIEWS}")
    if not args.no_run:
        # choosing comes before reporting: the candidates' tuning seeds first (the baseline is not chosen among),
        # then every recipe's reporting seeds, seed by seed so that a stopped run leaves balanced rows
        plan = [(s, w, r) for s in args.tune_seeds for w in args.worlds for r in recipes if r != BASELINE]
        plan += [(s, w, r) for s in args.report_seeds for w in args.worlds for r in recipes]
        for seed, world, recipe in plan:
            late = args.until and datetime.now(timezone.utc).strftime("%H:%M") >= args.until
            if not late and not run_path(args.out, recipe, world, seed).is_file():
                run_once(args.out, recipe, world, seed)
    table(args.out, recipes, args.worlds, args.report_seeds)
    print()
    protocol(args.out, recipes, args.tune_seeds, args.report_seeds)


if __name__ == "__main__":
    main()
