"""Whether bf16 pays on the device a run lands on, and the precision a run asks for made to fit it.

bf16 autocast is made for matrix units that do bf16 natively: CUDA GPUs of compute capability 8.0 and above,
and CPUs with AMX. Elsewhere its casts can cost more than they save: on an AMD EPYC with AVX-512 bf16
instructions but no AMX, ``bf16-mixed`` made the step several times slower than ``32-true``
(docs/benchmarks.md).
"""

from __future__ import annotations

from pathlib import Path

import torch

BF16_MIXED = ("bf16-mixed", "bf16")  # Lightning's name and its alias


def cpu_flags() -> set[str]:
    """The CPU's feature flags from ``/proc/cpuinfo`` (empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    return next((set(line.split(":", 1)[1].split()) for line in text.splitlines() if line.startswith("flags")), set())


def bf16_pays(device_type: str) -> tuple[bool, str]:
    """Whether bf16 runs natively on ``"cpu"`` or ``"cuda"`` (device 0), and why, in words for the user."""
    if device_type == "cuda":
        major, minor = torch.cuda.get_device_capability()
        native = torch.cuda.is_bf16_supported(including_emulation=False)
        return native, f"compute capability {major}.{minor}{'' if native else ' has no native bf16'}"
    if "amx_bf16" in cpu_flags():
        return True, "this CPU has AMX bf16 units"
    return False, "this CPU has no AMX bf16 units, without which bf16 measured slower than fp32 (docs/benchmarks.md)"


def landing_device(accelerator: object) -> str:
    """The device type ``--trainer.accelerator`` lands on: ``"auto"`` picks CUDA, then MPS, then the CPU."""
    name = str(accelerator).lower()
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    return "cuda" if name == "gpu" else name


def resolve_precision(precision: str | int | None, accelerator: object) -> tuple[str | int | None, str]:
    """The precision to run and why: ``bf16-mixed`` where bf16 is not native becomes ``32-true``.

    Args:
        precision: ``--trainer.precision`` as asked.
        accelerator: ``--trainer.accelerator``; other devices than the CPU and CUDA keep the precision asked.

    Returns:
        The precision and a reason (empty when nothing was chosen).
    """
    device_type = landing_device(accelerator)
    if precision not in BF16_MIXED or device_type not in ("cpu", "cuda"):
        return precision, ""
    if device_type == "cuda" and not torch.cuda.is_available():
        return precision, ""  # Lightning says there is no GPU
    pays, why = bf16_pays(device_type)
    return (precision, why) if pays else ("32-true", f"{precision} asked for, but {why}")
