"""The shipped toy models: cold-load time (after imports) and zero-shot accuracy on fresh scenes.

python benchmarks/toy_models.py            # 2,000 fresh scenes, seed 10,000
python benchmarks/toy_models.py --world b  # world B's subject and judge on world B's scenes

Accuracy among the world's 30 captions in two templates: the held-out one, never seen in training (how
well the text tower generalises), and the world's first template ("a red star"), the captions a judge
chooses among when it scores inversions (``toyworld.evaluate.judge_run``).
"""

from __future__ import annotations

import argparse
import time

import torch

from clip_inversion.core.clip import CLIPSpec, load_clip
from clip_inversion.toyworld.evaluate import WORLDS, zero_shot_accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", choices=sorted(WORLDS), default="a", help="the world's scenes and captions")
    parser.add_argument("--models", nargs="+", help="default: the world's subject and judge")
    parser.add_argument("-n", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=10_000)
    args = parser.parse_args()
    toy = WORLDS[args.world]
    torch.set_grad_enabled(False)
    judging = toy.world.templates[0]
    print(f"| model | cold load | held-out template: colour, shape, caption | {judging!r}: colour, shape, caption |")
    print("| --- | --- | --- | --- |")
    for name in args.models or [toy.subject, toy.judge]:
        start = time.perf_counter()
        clip = load_clip(CLIPSpec(name))
        seconds = time.perf_counter() - start
        cells = []
        for template in (None, judging):
            acc = zero_shot_accuracy(clip, toy.world, n=args.n, seed=args.seed, template=template)
            cells.append(", ".join(f"{acc[k]:.1%}" for k in ("colour", "shape", "caption")))
        print(f"| `{name}` | {seconds:.2f} s | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main()
