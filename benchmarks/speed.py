"""The same inversion work three ways: the authors' loop, our tool at their settings, our tool batched.

    python benchmarks/speed.py                      # CPU, the bundled toy subject
    python benchmarks/speed.py --anomaly            # the reference loop as released (anomaly detection on)

(a) a faithful re-implementation of the authors' loop: plain PyTorch, fp32, one prompt at a time, weight
gradients computed (the model is not frozen), optionally with ``torch.autograd.set_detect_anomaly(True)``;
(b) clip-inversion through Lightning at the same settings, one prompt at a time;
(c) clip-inversion with ``--prompts-per-batch`` prompts inverted together.
All three: the same model, prompts, copies, steps, resolution schedule, TV and optimizer. Time per step
excludes the first ``--warmup`` steps; prompts per hour counts the whole schedule.
"""

from __future__ import annotations

import argparse
import time

import kornia.augmentation as K
import torch
import torch.nn.functional as F
from lightning import Callback, Trainer

from clip_inversion.callbacks import ResolutionSchedule
from clip_inversion.clip import CLIPSpec, load_clip
from clip_inversion.data import PromptDataModule
from clip_inversion.module import CLIPInversion
from clip_inversion.objective import total_variation

PROMPTS = ["a red circle", "a blue square", "a yellow star", "a green triangle", "a purple cross", "an orange star"]


def reference_loop(args: argparse.Namespace, prompt: str) -> list[float]:
    """The authors' loop for one prompt; returns the wall time of every step."""
    clip = load_clip(CLIPSpec(args.model))
    model = clip.model.requires_grad_(True)  # as released: nothing frozen, weight gradients computed
    torch.autograd.set_detect_anomaly(args.anomaly)
    with torch.no_grad():
        target = model.encode_text(clip.tokenizer([prompt]))
    image = torch.rand(1, 3, args.init_size, args.init_size, requires_grad=True)
    optimizer = torch.optim.Adam([image], lr=0.1)
    affine = K.RandomAffine(30, (0.1, 0.1), (0.7, 1.2), p=0.5, padding_mode="border")
    times = []
    for step in range(args.steps):
        start = time.perf_counter()
        if step in args.milestones:
            image = F.interpolate(image.detach(), size=args.milestones[step], mode="bicubic").requires_grad_()
            optimizer = torch.optim.Adam([image], lr=0.1)
        views = affine(image.repeat(args.copies, 1, 1, 1))
        views = F.interpolate(views, size=clip.image_size, mode="bicubic")
        emb = model.encode_image((views - clip.mean) / clip.std)
        distance = (emb / emb.norm(dim=-1, keepdim=True) - target / target.norm(dim=-1, keepdim=True)).norm(dim=-1)
        loss = distance.mean() + 0.005 * total_variation(image).sum()
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_([image], 1.0)
        optimizer.step()
        with torch.no_grad():
            image.clamp_(0, 1)
        times.append(time.perf_counter() - start)
    torch.autograd.set_detect_anomaly(False)
    return times


class StepTimer(Callback):
    """Time from one step's end to the next: Lightning's own work between steps included."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.last = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = time.perf_counter()
        self.times.append(now - self.last)
        self.last = now


def ours(args: argparse.Namespace, prompts: list[str], batch_size: int) -> list[float]:
    """clip-inversion's module, data and callbacks under a Lightning Trainer; returns every step's time."""
    timer = StepTimer()
    module = CLIPInversion(CLIPSpec(args.model), steps=args.steps, init_size=args.init_size, copies=args.copies)
    trainer = Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
        callbacks=[ResolutionSchedule(args.milestones), timer],
        default_root_dir=args.run_dir,
    )
    trainer.fit(module, PromptDataModule(prompts, batch_size=batch_size, steps=args.steps))
    return timer.times


def report(name: str, times: list[float], prompts: int, args: argparse.Namespace) -> None:
    steady = times[args.warmup :] if len(times) > args.warmup else times
    per_step = sum(steady) / len(steady)
    per_prompt = sum(times) / prompts
    print(f"| {name} | {per_step * 1000:.1f} ms | {3600 / per_prompt:.0f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="toy-subject")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--copies", type=int, default=13)
    parser.add_argument("--init-size", type=int, default=32)
    parser.add_argument("--prompts", type=int, default=2, help="prompts for (a) and (b), one at a time")
    parser.add_argument("--prompts-per-batch", type=int, default=6, help="prompts inverted together in (c)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--anomaly", action="store_true", help="anomaly detection on in (a), as released")
    parser.add_argument("--run-dir", default="runs/benchmark-speed")
    args = parser.parse_args()
    args.milestones = {args.steps // 3: args.init_size * 3 // 2, 2 * args.steps // 3: args.init_size * 2}
    torch.manual_seed(0)
    print(f"{args.model}, {args.steps} steps, {args.copies} copies, {args.init_size} px, milestones {args.milestones}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    print("| run | time per step | prompts per hour |")
    print("| --- | --- | --- |")
    label = "(a) reference loop" + (" with anomaly detection" if args.anomaly else "")
    report(label, [t for p in PROMPTS[: args.prompts] for t in reference_loop(args, p)], args.prompts, args)
    report("(b) ours, one prompt a batch", ours(args, PROMPTS[: args.prompts], 1), args.prompts, args)
    n = args.prompts_per_batch
    report(f"(c) ours, {n} prompts a batch", ours(args, PROMPTS[:n], n), n, args)


if __name__ == "__main__":
    main()
