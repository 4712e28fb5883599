"""Each fast setting on and off, one at a time: CPU time of one optimisation step, in one process.

    python benchmarks/step_ablation.py                 # toy-subject, 6 prompts x 13 copies, 32/48/64 px images

The step is :meth:`clip_inversion.core.inverter.Inverter.step`: augmentations, encoding, objective, backward,
per-prompt clipping, clamping and Adam, without Lightning around it (``benchmarks/speed.py`` times the whole
tool). Each setting's median over ``--repeats`` steps at every image size of the schedule, settings
interleaved so that a busy machine affects them alike; process CPU time with one thread, steadier than wall
time on a shared machine.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch

from clip_inversion.core.augment import Augment
from clip_inversion.core.clip import CLIPSpec, load_clip
from clip_inversion.core.image import PixelImage
from clip_inversion.core.inverter import Inverter, Member

SETTINGS = {
    "generic warp, fp32": {},
    "fused warp": {"fused_warp": True},
    "fused warp + channels-last": {"fused_warp": True, "channels_last": True},
    "fused warp + bf16 autocast": {"fused_warp": True, "bf16": True},
    "fused warp + channels-last + bf16 autocast": {"fused_warp": True, "channels_last": True, "bf16": True},
}


def make(args: argparse.Namespace, fused_warp: bool = False, channels_last: bool = False, bf16: bool = False):
    clip = load_clip(CLIPSpec(args.model))
    if channels_last:
        clip.model.visual.to(memory_format=torch.channels_last)
    inverter = Inverter([Member(clip)], Augment(None, args.copies), fused_warp=fused_warp, channels_last=channels_last)
    cast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
    return inverter, cast


def step(inverter: Inverter, cast, optimizer: torch.optim.Optimizer, number: int) -> float:
    start = time.process_time()
    with cast():
        inverter.step(optimizer, number)
    return time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="toy-subject")
    parser.add_argument("--prompts", type=int, default=6)
    parser.add_argument("--copies", type=int, default=13)
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 48, 64])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    torch.set_num_threads(1)
    inverters = {name: make(args, **kw) for name, kw in SETTINGS.items()}
    prompts = [f"a red circle {i}" for i in range(args.prompts)]
    times: dict[str, list[float]] = {name: [] for name in SETTINGS}
    for size in args.sizes:
        for inverter, _ in inverters.values():
            inverter.start(PixelImage(list(range(args.prompts)), size), prompts)
        optimizers = {name: torch.optim.Adam(inv.image.parameters(), lr=0.1) for name, (inv, _) in inverters.items()}
        for i in range(args.repeats + 2):  # two warm-up steps a size
            for name, (inverter, cast) in inverters.items():
                spent = step(inverter, cast, optimizers[name], i)
                if i >= 2:
                    times[name].append(spent)
    print(f"{args.model}, {args.prompts} prompts x {args.copies} copies, images {args.sizes} px, one thread\n")
    print("| setting | CPU time a step (median) | vs generic |")
    print("| --- | --- | --- |")
    base = statistics.median(times["generic warp, fp32"])
    for name, spent in times.items():
        median = statistics.median(spent)
        print(f"| {name} | {median * 1000:.1f} ms | {median / base:.2f}x |")


if __name__ == "__main__":
    main()
