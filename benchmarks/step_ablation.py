"""Each fast setting on and off, one at a time: CPU time of one optimisation step, in one process.

    python benchmarks/step_ablation.py                 # toy-subject, 6 prompts x 13 copies, 32/48/64 px images

The step is the module's own: augmentations, encoding, objective, backward, per-image clipping and Adam,
without Lightning around it (``benchmarks/speed.py`` times the whole tool). Each setting's median over
``--repeats`` steps at every image size of the schedule, settings interleaved so that a busy machine
affects them alike; process CPU time with one thread, steadier than wall time on a shared machine.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch

from clip_inversion.clip import CLIPSpec
from clip_inversion.image import PixelImage
from clip_inversion.module import CLIPInversion
from clip_inversion.objective import clip_grad_norm_per_image_

SETTINGS = {
    "generic warp, fp32": {},
    "fused warp": {"fused_warp": True},
    "fused warp + channels-last": {"fused_warp": True, "channels_last": True},
    "fused warp + bf16 autocast": {"fused_warp": True, "bf16": True},
    "fused warp + channels-last + bf16 autocast": {"fused_warp": True, "channels_last": True, "bf16": True},
}


def make(args: argparse.Namespace, fused_warp: bool = False, channels_last: bool = False, bf16: bool = False):
    module = CLIPInversion(CLIPSpec(args.model), copies=args.copies, fused_warp=fused_warp, channels_last=channels_last)
    module.configure_model()
    module.targets = module.clip.encode_text([f"a red circle {i}" for i in range(args.prompts)])
    cast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
    return module, cast


def step(module: CLIPInversion, cast, optimizer: torch.optim.Optimizer, seeds: list[int]) -> float:
    start = time.process_time()
    with cast():
        loss = module.per_prompt_loss(seeds)["loss"].sum()
    optimizer.zero_grad()
    loss.backward()
    clip_grad_norm_per_image_(module.image.pixels.grad, 1.0)
    optimizer.step()
    module.image.project_()
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
    modules = {name: make(args, **kw) for name, kw in SETTINGS.items()}
    times: dict[str, list[float]] = {name: [] for name in SETTINGS}
    for size in args.sizes:
        for module, _ in modules.values():
            module.image = PixelImage(list(range(args.prompts)), size)
        optimizers = {name: torch.optim.Adam(m.image.parameters(), lr=0.1) for name, (m, _) in modules.items()}
        for i in range(args.repeats + 2):  # two warm-up steps a size
            for name, (module, cast) in modules.items():
                spent = step(module, cast, optimizers[name], [100 * p + i for p in range(args.prompts)])
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
