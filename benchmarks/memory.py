"""How many prompts fit in one batch: memory a prompt needs for one step, and the largest batch per GPU size.

    python benchmarks/memory.py --model ViT-B-16                        # estimate anywhere (random weights)
    python benchmarks/memory.py --model ViT-B-16 --device cuda --search # measure: the largest batch that runs

The estimate counts the bytes autograd saves for the backward pass (the activations) of one copy through
the image tower at its input size, under fp32 and under bf16 autocast, times the copies; the weights and a
margin for the workspace are added once. The attention kernel differs by device (the CPU's saves more than
a GPU's fused one), so the estimate errs on the safe side. ``--search`` on a GPU doubles the batch until a
real step runs out of memory, then bisects.
"""

from __future__ import annotations

import argparse
import contextlib

import torch

from clip_inversion.core.clip import CLIPSpec, FrozenCLIP, load_clip

GPUS = {"H100 80 GB": 80e9, "H200 141 GB": 141e9, "A100 40 GB": 40e9, "24 GB": 24e9}


def saved_bytes(clip: FrozenCLIP, device: str, autocast: bool) -> int:
    """Bytes autograd keeps for the backward pass of one image through the image tower."""
    storages: dict[int, int] = {}  # a tensor saved by several operations (or through views) counts once

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    images = torch.rand(1, 3, *clip.image_size, device=device, requires_grad=True)
    cast = torch.autocast(device, dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
    with cast, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        clip.encode_image(images).sum()
    return sum(storages.values())


def runs(clip: FrozenCLIP, prompts: int, copies: int, autocast: bool) -> bool:
    """Whether one forward and input-gradient backward of ``prompts x copies`` images fits on the GPU."""
    try:
        images = torch.rand(prompts * copies, 3, *clip.image_size, device="cuda", requires_grad=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
            clip.encode_image(images).sum().backward()
        torch.cuda.synchronize()
        return True
    except torch.OutOfMemoryError:
        return False
    finally:
        images = None
        torch.cuda.empty_cache()


def search(clip: FrozenCLIP, copies: int, autocast: bool) -> int:
    """The largest prompt batch whose step fits, by doubling then bisection."""
    low, high = 0, 1
    while runs(clip, high, copies, autocast):
        low, high = high, high * 2
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if runs(clip, mid, copies, autocast) else (low, mid)
    return low


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ViT-B-16")
    parser.add_argument("--copies", type=int, default=13)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--search", action="store_true", help="on a GPU: find the largest batch that runs")
    parser.add_argument("--margin", type=float, default=0.1, help="share of the GPU kept for workspace")
    args = parser.parse_args()
    clip = load_clip(CLIPSpec(args.model)).to(args.device)
    weights = sum(p.numel() * p.element_size() for p in clip.parameters())
    print(f"{args.model}: {clip.image_size[0]} px input, weights {weights / 2**20:.0f} MiB, {args.copies} copies\n")
    print("| precision | activations a prompt-step | " + " | ".join(GPUS) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in GPUS) + " |")
    for name, autocast in (("fp32", False), ("bf16 autocast", True)):
        per_prompt = saved_bytes(clip, args.device, autocast) * args.copies
        fits = [int((size * (1 - args.margin) - weights) // per_prompt) for size in GPUS.values()]
        print(f"| {name} | {per_prompt / 2**20:.0f} MiB | " + " | ".join(f"~{f} prompts" for f in fits) + " |")
    if args.search:
        gpu = torch.cuda.get_device_name()
        for name, autocast in (("fp32", False), ("bf16 autocast", True)):
            print(f"{gpu}, {name}: the largest batch that runs is {search(clip, args.copies, autocast)} prompts")


if __name__ == "__main__":
    main()
