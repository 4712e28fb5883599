"""One prepared GPU check: every GPU figure of docs/benchmarks.md from one command, about 8 minutes on one H100.

    python benchmarks/gpu_check.py --commit "$(git rev-parse --short HEAD)"   # on a GPU
    python benchmarks/gpu_check.py --smoke                                    # the same code path on the CPU

It needs no network and no editing on the device: random weights are planted where open_clip looks for OpenAI's
ViT-B/16 (``pretrained=openai``, with the QuickGELU that tag asks for), and every measurement inverts them at
the paper's settings (13 copies of the released affine, the 224 px stage, TV 0.005) for a short fixed number of
steps, the first few left out as warm-up:

- prompts per GPU-hour at ``--data.batch_size`` 1, 8, 32 and the largest that fits (doubling from 32 until out
  of memory), fp32 and eager as ``configs/paper.yaml`` runs;
- at batch 32 (or the largest of 1 and 8 that fits): ``--model.compile=true`` (inductor, CUDA graphs) and
  ``configs/fast.yaml`` (bf16 autocast, the fused warp, channels-last), alone and together, each as a ratio to
  the eager fp32 row in the same run; then the fast settings at the largest batch that fits them, compiled;
- model FLOP utilisation: the image tower's forward and input-only backward for every copy (counted by
  ``torch.utils.flop_counter``) against the device's dense bf16 peak, read from its name;
- peak memory a prompt (``torch.cuda.max_memory_allocated`` over the batch);
- the released loop's cost a prompt (plain PyTorch, fp32, one prompt, anomaly detection on, as released), so
  that the speed-up is a ratio measured in the same run;
- with several GPUs, ``clip-inversion fit --config configs/paper.yaml --trainer.devices=N`` on all of them.

Prompts per GPU-hour are ``3600 * batch / (3400 * step time)``: the paper's 3400 steps at the steady step time
(every stage's step costs about what the 224 px stage's does, since every copy is resized to the model's 224 px
input). ``--smoke`` runs the same code on the CPU with the bundled toy CLIP at 64 px, 2 steps a measurement,
batches 1, 4 and 8 and doubling to at most 16 (a CPU does not run out of memory in time), compiling once.

A row that fails (other than by running out of memory) is listed with its error and the check goes on; no row
starts after ``--budget`` seconds; the exit status is 1 when a row failed or was skipped. Writes
``gpu_check.json`` (after every measurement, so a run cut short keeps what it measured) and
``gpu_check.md`` to ``--out``; the last line printed is ``prompts_per_hour=P mfu=M peak_gib=G`` for the paper's
settings at their fastest measured configuration (``mfu=n/a`` where the device's peak is not known, the CPU
among them).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import huggingface_hub.constants
import open_clip
import speed  # benchmarks/ is on the path when a script of it runs
import torch
from open_clip.transformer import QuickGELU
from safetensors.torch import save_file

from clip_inversion.core.clip import CLIPSpec, load_clip
from clip_inversion.errors import first_line
from clip_inversion.precision import resolve_precision

ROOT = Path(__file__).resolve().parents[1]
PAPER_STEPS = 3400
# Dense bf16 tensor-core peaks (no sparsity) from the vendors' data sheets, by the first name part that matches.
BF16_PEAK = {"H200": 989e12, "H100 NVL": 835e12, "H100 PCIe": 756e12, "H100": 989e12, "A100": 312e12}
# name: (speed.py flags, fast row); "fast" is configs/fast.yaml, its precision resolved as the CLI resolves it
VARIANTS = {
    "paper": ([], False),
    "paper + compile": (["--fast-compile", "--no-fast-fused"], True),
    "fast": (["--fast-channels-last"], True),
    "fast + compile": (["--fast-channels-last", "--fast-compile"], True),
}


@dataclass
class Plan:
    """What one check measures: the model, its input, the steps a measurement and the batches."""

    model: str
    pretrained: str | None
    size: int
    steps: int
    warmup: int
    batches: list[int]
    largest: int  # the doubling's cap
    compiled: list[str]  # the variants compiled at the last batch listed (each costs a minute on a CPU)
    compile_largest: bool  # compile the fast settings at the largest batch too (a second compilation)
    copies: int = 13
    tv: float = 0.005


FULL = Plan("ViT-B-16", "openai", 224, 13, 3, [1, 8, 32], 4096, ["paper + compile", "fast + compile"], True)
SMOKE = Plan("toy-subject", None, 64, 2, 1, [1, 4, 8], 16, ["fast + compile"], False)


def plant_openai_weights(cache: Path) -> None:
    """Random ViT-B/16 weights where open_clip looks for the ``openai`` tag's, so its real path runs offline."""
    repo = cache / "models--timm--vit_base_patch16_clip_224.openai"
    revision = "0" * 40
    (repo / "snapshots" / revision).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    weights = open_clip.create_model("ViT-B-16").state_dict()
    weights = {k: v.half().contiguous() for k, v in weights.items()}
    save_file(weights, repo / "snapshots" / revision / "open_clip_model.safetensors")


def bf16_peak(device: str) -> float | None:
    """The device's dense bf16 peak in FLOP/s, from its name; ``None`` for a CPU or an unknown GPU."""
    if device != "cuda":
        return None
    name = torch.cuda.get_device_name()
    return next((peak for part, peak in BF16_PEAK.items() if part in name), None)


def peak_bytes(device: str) -> int:
    """The peak memory since the last reset: allocated on a GPU, the process's peak RSS on a CPU."""
    if device == "cuda":
        return torch.cuda.max_memory_allocated()
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class Check:
    """Runs the measurements on one device, keeping every result in ``self.results`` and on disk."""

    def __init__(self, plan: Plan, device: str, out: Path, cache: Path, commit: str, budget: float = 1e9) -> None:
        self.plan, self.device, self.out, self.cache = plan, device, out, cache
        self.deadline = time.monotonic() + budget  # no row starts after it
        self.results: dict = {
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "device": torch.cuda.get_device_name() if device == "cuda" else f"CPU ({platform.processor() or 'cpu'})",
            "commit": commit,
            "torch": torch.__version__,
            "model": f"{plan.model}" + (f" ({plan.pretrained}, planted random weights)" if plan.pretrained else ""),
            "settings": {"copies": plan.copies, "size": plan.size, "steps": plan.steps, "warmup": plan.warmup},
            "memory": "allocated" if device == "cuda" else "process peak RSS",  # what peak_gib counts
            "rows": [],
            "failed": [],  # rows that raised (not out of memory) or were skipped, with why
        }

    def args(self, flags: list[str], batch: int) -> argparse.Namespace:
        """speed.py's settings for one measurement."""
        p = self.plan
        argv = ["--device", self.device, "--model", p.model, "--copies", str(p.copies), "--tv", str(p.tv)]
        argv += ["--schedule", f"0:{p.size}", "--steps", str(p.steps), "--warmup", str(p.warmup)]
        argv += ["--fast-batch", str(batch), "--run-dir", str(self.out / "runs"), *flags]
        if p.pretrained:
            argv += ["--pretrained", p.pretrained, "--cache-dir", str(self.cache)]
        return speed.parse_args(argv)

    def save(self) -> None:
        (self.out / "gpu_check.json").write_text(json.dumps(self.results, indent=1))

    def measure(self, name: str, batch: int, run: Callable[[], float]) -> dict | None:
        """One row: ``run()`` returns the steady step time. ``None`` when the batch does not fit, when the time
        budget is spent (the row is listed as skipped), or when the row fails (listed with its error: on a lent
        device one failing row must not cost the others)."""
        if time.monotonic() > self.deadline:
            self.results["failed"].append({"name": name, "batch": batch, "error": "skipped: the time budget is spent"})
            self.save()
            return None
        gc.collect()
        if self.device == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        try:
            step = run()
        except Exception as e:
            if isinstance(e, torch.OutOfMemoryError) or isinstance(e.__cause__, torch.OutOfMemoryError):
                print(f"{name}, batch {batch}: out of memory", flush=True)
                return None
            error = f"{type(e).__name__}: {first_line(e)}"
            self.results["failed"].append({"name": name, "batch": batch, "error": error})
            self.save()
            print(f"{name}, batch {batch}: failed, {error}", flush=True)
            return None
        finally:
            gc.collect()
        peak = bf16_peak(self.device)
        row = {
            "name": name,
            "batch": batch,
            "step_s": step,
            "prompt_step_s": step / batch,
            "prompts_per_hour": 3600 * batch / (PAPER_STEPS * step),
            "mfu": self.results["flops"] * batch / step / peak if peak else None,
            "peak_gib": peak_bytes(self.device) / 2**30,
            "wall_s": time.perf_counter() - start,
        }
        self.results["rows"].append(row)
        self.save()
        print(f"{name}, batch {batch}: {1000 * step:.1f} ms a step, {row['prompts_per_hour']:.0f} an hour", flush=True)
        return row

    def ours(self, variant: str, batch: int) -> dict | None:
        flags, fast = VARIANTS[variant]
        precision = resolve_precision("bf16-mixed", self.device)[0] if variant.startswith("fast") else "32-true"
        args = self.args([*flags, "--fast-precision", str(precision)], batch)
        prompts = [f"a photo of thing number {i}" for i in range(batch)]

        def run() -> float:
            steady, _ = speed.ours(args, prompts, batch, fast)
            return steady[0] / (args.steps - args.warmup)

        return self.measure(variant, batch, run)

    def released(self) -> dict | None:
        args = self.args([], 1)

        def run() -> float:
            (steady, _), _ = speed.reference_loop(args, "a photo of a dog", anomaly=True)
            return steady / (args.steps - args.warmup)

        return self.measure("released loop (anomaly detection on)", 1, run)

    def largest(self, variant: str, start: int) -> int:
        """The largest batch that fits, doubling from ``start`` (which fitted) until one does not."""
        batch = start
        while batch * 2 <= self.plan.largest and self.ours(variant, batch * 2):
            batch *= 2
        return batch

    def ddp(self, devices: int, batch: int) -> None:
        """The user's command on ``devices`` devices, each inverting its own ``batch`` prompts: wall time, start-up
        included (so a lower bound on what the steady state gives)."""
        prompts = self.out / "ddp-prompts.txt"
        prompts.write_text("".join(f"a photo of thing number {i}\n" for i in range(devices * batch)))
        p = self.plan
        command = [sys.executable, "-m", "clip_inversion", "fit", "--config", str(ROOT / "configs" / "paper.yaml")]
        command += [f"--model.clip.model_name={p.model}", f"--model.clip.pretrained={p.pretrained or 'null'}"]
        command += [f"--model.clip.cache_dir={self.cache}", f"--model.steps={p.steps}", f"--model.init_size={p.size}"]
        command += [f"--data.prompts_file={prompts}", f"--data.batch_size={batch}", f"--trainer.devices={devices}"]
        command += [f"--trainer.accelerator={'gpu' if self.device == 'cuda' else 'cpu'}", "--trainer.logger=false"]
        command += ["--trainer.callbacks=[]", f"--trainer.default_root_dir={self.out / 'ddp'}", "--fresh"]
        command += ["--trainer.enable_progress_bar=false", "--writer.snapshot_steps=[]"]
        env = os.environ | {"HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
        start = time.perf_counter()
        subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wall = time.perf_counter() - start
        row = {"name": f"clip-inversion fit, {devices} devices", "batch": batch, "devices": devices, "wall_s": wall}
        row["prompts_per_hour"] = 3600 * devices * batch / (wall * PAPER_STEPS / p.steps)
        self.results["rows"].append(row)
        self.save()
        print(f"{row['name']}, batch {batch} each: {wall:.1f} s for {p.steps} steps, start-up included", flush=True)

    def run(self) -> None:
        p = self.plan
        if p.pretrained:
            clip = load_clip(CLIPSpec(p.model, p.pretrained, str(self.cache)))
            self.results["quick_gelu_modules"] = sum(isinstance(m, QuickGELU) for m in clip.model.modules())
            del clip
        self.results["flops"] = speed.step_flops(self.args([], 1)) * p.copies  # one prompt-step
        self.results["bf16_peak"] = bf16_peak(self.device)
        self.results["matmul"] = speed.matmul_peak(self.device, 8192 if self.device == "cuda" else 256)
        self.released()
        fitted = [b for b in p.batches if self.ours("paper", b)]
        self.results["largest"] = {"paper": self.largest("paper", fitted[-1]) if fitted else 0}
        at = max(fitted, default=1)
        for variant in ("fast", *p.compiled):
            self.ours(variant, at)
        largest = self.results["largest"]["fast"] = self.largest("fast", at)
        if largest > at and p.compile_largest:
            self.ours("fast + compile", largest)
        devices = torch.cuda.device_count() if self.device == "cuda" else 2  # the smoke runs 2 CPU processes
        if devices > 1 and time.monotonic() < self.deadline:
            try:
                self.ddp(devices, at)
            except (OSError, subprocess.CalledProcessError) as e:
                self.results["failed"].append({"name": "clip-inversion fit", "batch": at, "error": first_line(e)})
        self.save()


def table(results: dict) -> str:
    """The Markdown table of a check's rows, with its header line."""
    rows = [r for r in results["rows"] if "step_s" in r]
    released = next((r for r in rows if r["name"].startswith("released")), None)
    eager = {r["batch"]: r for r in rows if r["name"] == "paper"}
    lines = [
        f"{results['date']}, {results['device']}, commit {results['commit']}, torch {results['torch']}, "
        f"{results['model']}, {results['settings']['copies']} copies at {results['settings']['size']} px, "
        f"{results['settings']['steps'] - results['settings']['warmup']} timed steps after "
        f"{results['settings']['warmup']}; {results['flops'] / 1e9:.1f} GFLOP a prompt-step.",
        "",
        "| run | batch | step | a prompt-step | prompts per GPU-hour | vs eager fp32 (same batch) "
        "| vs released loop (a prompt) | MFU (bf16 peak) | peak memory a prompt |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        base = eager.get(r["batch"])
        versus = f"{base['step_s'] / r['step_s']:.2f}x" if base and r["name"] != "paper" else "-"
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "n/a"
        memory = f"{r['peak_gib'] / r['batch']:.2f} GiB" if results["memory"] == "allocated" else "n/a"
        lines.append(
            f"| {r['name']} | {r['batch']} | {1000 * r['step_s']:.1f} ms | {1000 * r['prompt_step_s']:.2f} ms "
            f"| {r['prompts_per_hour']:.0f} | {versus} | {times(released, r)} "
            f"| {mfu} | {memory} |"
        )
    for r in results["failed"]:
        lines.append(f"\n{r['name']}, batch {r['batch']}: {r['error']}")
    for r in results["rows"]:
        if "devices" in r:
            each = f"{r['batch']} prompts each: {r['prompts_per_hour']:.0f} prompts per hour in all"
            lines.append(f"\n{r['name']}, {each}, start-up included")
    return "\n".join(lines) + "\n"


def times(released: dict | None, row: dict) -> str:
    """How many times faster a prompt-step of ``row`` is than the released loop's."""
    return f"{released['prompt_step_s'] / row['prompt_step_s']:.1f}x" if released else "-"


def summary(results: dict) -> str:
    """``prompts_per_hour=P mfu=M peak_gib=G``: the paper's settings at their fastest measured configuration."""
    rows = [r for r in results["rows"] if "step_s" in r and not r["name"].startswith("released")]
    if not rows:
        return "prompts_per_hour=n/a mfu=n/a peak_gib=n/a"
    best = max(rows, key=lambda r: r["prompts_per_hour"])
    mfu = f"{best['mfu']:.3f}" if best["mfu"] is not None else "n/a"
    return f"prompts_per_hour={best['prompts_per_hour']:.0f} mfu={mfu} peak_gib={best['peak_gib']:.2f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="the same code on the CPU: toy model, tiny sizes")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "gpu-check", help="where the results go")
    parser.add_argument("--commit", default="", help="the commit measured (default: git's, where there is one)")
    parser.add_argument("--budget", type=float, default=450, help="seconds after which no row starts (default 450)")
    args = parser.parse_args(argv)
    for name in ("lightning.pytorch", "lightning.fabric"):  # the banner and tips of every row's Trainer
        logging.getLogger(name).setLevel(logging.WARNING)
    device = "cuda" if torch.cuda.is_available() and not args.smoke else "cpu"
    if device == "cpu" and not args.smoke:
        parser.error("no GPU here: run with --smoke for the CPU check")
    commit = (
        args.commit
        or subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
    )
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as cache:
        plan = SMOKE if args.smoke else FULL
        if plan.pretrained:
            plant_openai_weights(Path(cache))
            huggingface_hub.constants.HF_HUB_OFFLINE = True
        check = Check(plan, device, args.out, Path(cache), commit or "unknown", args.budget)
        check.run()
    text = table(check.results)
    (args.out / "gpu_check.md").write_text(text)
    print(text)
    print(summary(check.results))
    if check.results["failed"]:
        sys.exit(1)  # after the table: what did run is kept


if __name__ == "__main__":
    main()
