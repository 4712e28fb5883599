"""The shipped toy models: cold-load time (after imports) and held-out zero-shot accuracy.

python benchmarks/toy_models.py            # 2,000 fresh scenes, seed 10,000, held-out caption template
"""

from __future__ import annotations

import argparse
import time

import torch

from clip_inversion.core.clip import CLIPSpec, load_clip
from clip_inversion.toyworld.evaluate import zero_shot_accuracy
from clip_inversion.toyworld.world import ShapeWorld


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["toy-subject", "toy-judge"])
    parser.add_argument("-n", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=10_000)
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    print("| model | cold load | colour | shape | full caption |")
    print("| --- | --- | --- | --- | --- |")
    for name in args.models:
        start = time.perf_counter()
        clip = load_clip(CLIPSpec(name))
        seconds = time.perf_counter() - start
        acc = zero_shot_accuracy(clip, ShapeWorld(), n=args.n, seed=args.seed)
        print(f"| `{name}` | {seconds:.2f} s | {acc['colour']:.1%} | {acc['shape']:.1%} | {acc['caption']:.1%} |")


if __name__ == "__main__":
    main()
