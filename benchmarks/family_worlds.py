"""Train family worlds (or read them from the cache) and print one Markdown row a world: its models and figures.

    python benchmarks/family_worlds.py --worlds 0 1 2 3 4 --cache runs/worlds      # trains what is missing
    python benchmarks/family_worlds.py --worlds 0 1 2 3 4 --cache runs/worlds --no-run

Each row: the world's image size, style, backgrounds, clutter and shapes; then for its subject and its judge the
tower, the zero-shot colour-and-shape accuracy on 2,000 fresh renders among the 30 captions of the held-out
template (never trained on) and of the judging template ("a {colour} {shape}"), and the training seconds
(``world.json``, written by ``clip-inversion-train-toy --world-seed K --cache DIR``). Set ``OMP_NUM_THREADS=1`` on a
busy machine; the seconds are those of the machine and threads that trained the world.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from toy_judge import ROOT

from clip_inversion.toyworld.cache import ROLES, read_world, train_world


def row(seed: int, record: dict) -> str:
    w = record["world"]
    cells = [str(seed), f"{w['image_size']} px", w["style"], ", ".join(w["backgrounds"]), str(w["clutter_slots"])]
    cells.append(", ".join(w["shapes"]))
    for role in ROLES:
        r = record[role]
        held_out, judging = (r["accuracy"][k]["caption"] for k in ("held_out_template", "judge_template"))
        cells += [r["tower"]["label"], f"{100 * held_out:.1f}% / {100 * judging:.1f}%", f"{r['seconds']:.0f}"]
    cells.append(f"{record['seconds']:.0f}" if "seconds" in record else "-")
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worlds", type=int, nargs="+", required=True, help="the worlds' seeds")
    parser.add_argument("--cache", type=Path, default=ROOT / "runs" / "worlds")
    parser.add_argument("--no-run", action="store_true", help="print the cached worlds only")
    args = parser.parse_args()
    print(
        "| world | size | style | backgrounds | specks | shapes | subject | subject: caption, held-out / judging "
        "template | s | judge | judge: caption, held-out / judging template | s | s in all |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for seed in args.worlds:
        record = read_world(args.cache, seed) if args.no_run else train_world(seed, args.cache)
        if record is not None:
            print(row(seed, record), flush=True)


if __name__ == "__main__":
    main()
