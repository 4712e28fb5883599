"""The same inversion work three ways: the authors' loop, our tool at their settings, our tool at its fastest.

    python benchmarks/speed.py                                   # CPU, the bundled toy subject
    python benchmarks/speed.py --device cuda --model ViT-B-16 \\
        --steps 340 --schedule 0:64,90:128,180:224 --fast-batch 32 --fast-precision bf16-mixed --fast-compile

Rows, each run in its own process (so peak memory is its own), ``--repeats`` times, interleaved:

- (a) the authors' loop as released: plain PyTorch, fp32, one prompt at a time, the model frozen, with and
  without ``torch.autograd.set_detect_anomaly(True)`` (the release leaves it on);
- (b) clip-inversion through Lightning at the same settings, one prompt a batch;
- (c) clip-inversion at its fast settings: ``--fast-batch`` prompts a batch, the fused warp, and optionally
  mixed precision and ``torch.compile``.

All rows: the same model, prompts, copies, steps, resolution schedule, TV and optimizer. Time per step is
measured by step-count differencing: each row runs ``--steps`` and ``--steps + --diff-steps`` steps (the
extra ones at the last resolution), and ``(T2 - T1) / diff-steps`` (medians over repeats of whole-schedule
wall times, model loading excluded, device synchronised) leaves out every fixed cost; "vs (a)" divides it by
row (a)'s. Prompts per hour counts the whole ``--steps`` schedule (compilation included). FLOPs of the
work: the image tower's forward plus its input-gradient backward for every copy at the model's input size,
counted with ``torch.utils.flop_counter.FlopCounterMode`` (the reference's extra weight gradients are not
counted); the matmul peak is a large bf16 matrix product timed in the same run on the same device.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import kornia.augmentation as K
import torch
import torch.nn.functional as F
from lightning import Callback, Trainer

from clip_inversion.callbacks import ResolutionSchedule
from clip_inversion.core.clip import CLIPSpec, load_clip
from clip_inversion.data import PromptDataModule
from clip_inversion.module import CLIPInversion

PROMPTS = [f"a {c} {s}" for s in ("circle", "square", "star", "triangle", "cross") for c in ("red", "blue", "green")]
PROMPTS = (PROMPTS * 200)[:1000]  # the GPU case may batch hundreds: repeats are fine for timing


def now(device: str) -> tuple[float, float]:
    """(wall, process CPU) seconds, after the device finished its queued work."""
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter(), time.process_time()


def since(start: tuple[float, float], device: str) -> tuple[float, float]:
    end = now(device)
    return end[0] - start[0], end[1] - start[1]


def spec(args: argparse.Namespace) -> CLIPSpec:
    """The CLIP every row inverts: ``--model``, with ``--pretrained`` weights from ``--cache-dir`` if given."""
    return CLIPSpec(args.model, args.pretrained, args.cache_dir)


def released_tv(x: torch.Tensor) -> torch.Tensor:
    """The released ``TotalVariation``: per-channel L2 norms over (H, W), averaged, in four directions."""
    diffs = (
        x[:, :, :, 1:] - x[:, :, :, :-1],
        x[:, :, 1:, :] - x[:, :, :-1, :],
        x[:, :, 1:, 1:] - x[:, :, :-1, :-1],
        x[:, :, 1:, :-1] - x[:, :, :-1, 1:],
    )
    return sum(d.norm(p=2, dim=(2, 3)).mean() for d in diffs)


def reference_loop(args: argparse.Namespace, prompt: str, anomaly: bool) -> tuple[tuple, tuple]:
    """The authors' loop for one prompt, as released: the model frozen, fp32, backward, clip, clamp, step.

    Returns (wall, CPU) seconds: steady (after warm-up), whole schedule (model loading excluded).
    """
    clip = load_clip(spec(args)).to(args.device)
    model = clip.model  # frozen (freeze_module in the release): no weight gradients
    torch.autograd.set_detect_anomaly(anomaly)
    with torch.no_grad():
        target = model.encode_text(clip.tokenizer([prompt]).to(args.device))
        target = target / target.norm(dim=-1, keepdim=True)
    image = torch.rand(1, 3, args.sizes[0], args.sizes[0], device=args.device, requires_grad=True)
    optimizer = torch.optim.Adam([image], lr=0.1)
    affine = K.RandomAffine(30, (0.1, 0.1), (0.7, 1.2), p=0.5, padding_mode="border")
    start = warm = now(args.device)
    for step in range(args.steps):
        if step == args.warmup:
            warm = now(args.device)
        if step in args.milestones:
            image = F.interpolate(image.detach(), size=args.milestones[step], mode="bicubic").requires_grad_()
            optimizer = torch.optim.Adam([image], lr=0.1)
        optimizer.zero_grad()
        loss = args.tv * released_tv(image)
        views = F.interpolate(affine(image.repeat(args.copies, 1, 1, 1)), size=clip.image_size, mode="bicubic")
        features = model.encode_image((views - clip.mean) / clip.std)
        features = features / features.norm(dim=-1, keepdim=True)
        loss = loss + (features - target).norm(dim=1).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_([image], 1.0)
        image.data = image.data.clamp(0, 1)
        optimizer.step()
    steady, total = since(warm, args.device), since(start, args.device)
    torch.autograd.set_detect_anomaly(False)
    return steady, total


class StepTimer(Callback):
    """Whole-batch and steady-state (after ``warmup`` steps) wall time, the device synchronised at the marks."""

    def __init__(self, device: str, warmup: int) -> None:
        self.device, self.warmup = device, warmup
        self.steady, self.total = [0.0, 0.0], [0.0, 0.0]

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.start = self.warm = now(self.device)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx + 1 == self.warmup:
            self.warm = now(self.device)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        for acc, mark in ((self.steady, self.warm), (self.total, self.start)):
            for i, t in enumerate(since(mark, self.device)):
                acc[i] += t


def ours(args: argparse.Namespace, prompts: list[str], batch_size: int, fast: bool) -> tuple[list, list]:
    """clip-inversion's module, data and callbacks under a Lightning Trainer; as :func:`reference_loop`."""
    timer = StepTimer(args.device, args.warmup)
    module = CLIPInversion(
        spec(args),
        steps=args.steps,
        init_size=args.sizes[0],
        copies=args.copies,
        tv=args.tv,
        fused_warp=fast and args.fast_fused,
        channels_last=fast and args.fast_channels_last,
        compile=fast and args.fast_compile,
    )
    trainer = Trainer(
        accelerator=args.device,
        devices=1,
        precision=args.fast_precision if fast else "32-true",
        logger=False,
        log_every_n_steps=50,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
        callbacks=[ResolutionSchedule(args.milestones), timer],
        default_root_dir=args.run_dir,
    )
    trainer.fit(module, PromptDataModule(prompts, batch_size=batch_size, steps=args.steps))
    return timer.steady, timer.total


def step_flops(args: argparse.Namespace) -> float:
    """FLOPs of one copy's forward and input-gradient backward through the image tower at its input size."""
    from torch.utils.flop_counter import FlopCounterMode

    clip = load_clip(spec(args)).to(args.device)
    images = torch.rand(1, 3, *clip.image_size, device=args.device, requires_grad=True)
    with FlopCounterMode(display=False) as counter:
        clip.encode_image(images).sum().backward()
    return float(counter.get_total_flops())


def matmul_peak(device: str, n: int) -> float:
    """Achieved bf16 FLOP/s of an ``n x n`` matrix product (the best of ten, after a warm-up)."""
    a, b = (torch.randn(n, n, device=device, dtype=torch.bfloat16) for _ in range(2))
    best = float("inf")
    for i in range(11):
        start = now(device)
        a @ b
        if i:
            best = min(best, since(start, device)[0])
    return 2 * n**3 / best


def child(args: argparse.Namespace) -> dict:
    """One row's work in this process: returns its times (seconds) and peak memory (bytes)."""
    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    if args.child.startswith("a"):
        times = [reference_loop(args, p, args.child == "a-anomaly") for p in PROMPTS[: args.prompts]]
        prompts, batch = args.prompts, 1
    elif args.child == "b":
        times = [ours(args, PROMPTS[: args.prompts], 1, fast=False)]  # one Trainer, one batch a prompt
        prompts, batch = args.prompts, 1
    else:
        times = [ours(args, PROMPTS[: args.fast_batch], args.fast_batch, fast=True)]
        prompts, batch = args.fast_batch, args.fast_batch
    if args.device == "cuda":
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    steps = (prompts // batch) * (args.steps - args.warmup)  # steady steps over all batches
    return {
        "row": args.child,
        "step_s": sum(s[0] for s, _ in times) / steps,
        "step_cpu_s": sum(s[1] for s, _ in times) / steps,
        "total_s": sum(t[0] for _, t in times),
        "prompts": prompts,
        "batch": batch,
        "peak": peak,
    }


ROWS = {
    "a": "(a) released loop (frozen model)",
    "a-anomaly": "(a) released loop, anomaly detection on (as released)",
    "b": "(b) ours, reference settings",
    "c": "(c) ours, fast settings",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--model", default="toy-subject", help="bundled name or open_clip architecture (random)")
    parser.add_argument("--pretrained", help="the architecture's pretrained tag or weights file (default: random)")
    parser.add_argument("--cache-dir", help="where the tag's weights are cached (default: the Hugging Face cache)")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--diff-steps", type=int, default=40, help="extra steps for step-count differencing")
    parser.add_argument("--copies", type=int, default=13)
    parser.add_argument("--tv", type=float, default=0.005)
    parser.add_argument(
        "--schedule", default="0:32,20:48,40:64", help="step:size,...; the paper: 0:64,900:128,1800:224"
    )
    parser.add_argument("--prompts", type=int, default=2, help="prompts for (a) and (b), one at a time")
    parser.add_argument("--fast-batch", type=int, default=6, help="prompts inverted together in (c)")
    parser.add_argument("--fast-precision", default="32-true", help="Lightning precision of (c), e.g. bf16-mixed")
    parser.add_argument("--fast-compile", action="store_true", help="torch.compile the image tower in (c)")
    parser.add_argument("--fast-channels-last", action="store_true", help="channels-last image tower in (c)")
    parser.add_argument("--no-fast-fused", dest="fast_fused", action="store_false", help="(c) without the fused warp")
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's); 1 on a shared machine")
    parser.add_argument("--matmul-size", type=int, default=8192)
    parser.add_argument("--run-dir", default="runs/benchmark-speed")
    parser.add_argument("--child", choices=list(ROWS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    schedule = dict(tuple(map(int, item.split(":"))) for item in args.schedule.split(","))
    args.sizes = [schedule[s] for s in sorted(schedule)]
    args.milestones = {s: v for s, v in schedule.items() if s > 0}
    return args


def main(argv: list[str] | None = None) -> list[dict]:
    """Run every row ``--repeats`` times in fresh processes, print the table; returns the rows' medians."""
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.child:
        print(json.dumps(child(args)))
        return []
    runs: dict[tuple[str, int], list[dict]] = {(row, n): [] for row in args.rows for n in (0, args.diff_steps)}
    script = str(Path(__file__).resolve())
    for _ in range(args.repeats):
        for row, extra in runs:
            steps = ["--steps", str(args.steps + extra)]
            out = subprocess.run(
                [sys.executable, script, *argv, *steps, "--child", row], capture_output=True, text=True
            )
            if out.returncode:
                sys.exit(f"{row} failed:\n{out.stderr[-3000:]}")
            runs[row, extra].append(json.loads(out.stdout.strip().splitlines()[-1]))
    flops = step_flops(args) * args.copies  # one prompt, one step
    peak = matmul_peak(args.device, args.matmul_size)
    print(f"{args.model} on {args.device}, {args.steps} steps, {args.copies} copies, schedule {args.schedule}")
    threads = args.threads or torch.get_num_threads()
    print(f"torch {torch.__version__}, {threads} threads, {args.repeats} repeats (medians)")
    print(
        f"(c): {args.fast_batch} prompts a batch, precision {args.fast_precision}, fused warp {args.fast_fused}, "
        f"channels-last {args.fast_channels_last}, compile {args.fast_compile}"
    )
    print(f"work: {flops / 1e9:.3f} GFLOP a prompt-step; bf16 {args.matmul_size}^3 matmul: {peak / 1e12:.2f} TFLOP/s\n")
    columns = "time per step | vs (a) | per prompt-step | prompts per hour | peak memory | of bf16 matmul rate"
    print(f"| run | {columns} |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    medians, reference = [], None
    for row in args.rows:
        short, long = runs[row, 0], runs[row, args.diff_steps]
        batches = short[0]["prompts"] // short[0]["batch"]
        total = statistics.median(r["total_s"] for r in short)
        step = (statistics.median(r["total_s"] for r in long) - total) / (args.diff_steps * batches)
        if row == "a":
            reference = step
        per_prompt = step / short[0]["batch"]
        hour = 3600 * short[0]["prompts"] / total
        memory = statistics.median(r["peak"] for r in short)
        rate = flops / per_prompt / peak
        medians.append({"row": row, "step_s": step, "prompts_per_hour": hour, "peak": memory, "mfu": rate})
        ratio = f"{step / reference:.2f}x" if reference else "-"
        print(
            f"| {ROWS[row]} | {step * 1000:.1f} ms | {ratio} | {per_prompt * 1000:.1f} ms | {hour:.0f} "
            f"| {memory / 2**20:.0f} MiB | {rate:.1%} |",
            flush=True,
        )
    return medians


if __name__ == "__main__":
    main()
