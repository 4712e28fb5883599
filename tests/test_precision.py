"""bf16-mixed runs where bf16 is native and 32-true elsewhere; other precisions and devices run as asked."""

import pytest
import torch

from clip_inversion.precision import resolve_precision


@pytest.mark.parametrize(
    ("capability", "native", "expected"),
    [((9, 0), True, ("bf16-mixed", "compute capability 9.0")),
     ((7, 0), False, ("32-true", "bf16-mixed asked for, but compute capability 7.0 has no native bf16"))],
)  # fmt: skip
def test_a_gpu_runs_bf16_only_with_native_bf16(monkeypatch, capability, native, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: native)
    assert resolve_precision("bf16-mixed", "auto") == expected
    assert resolve_precision("bf16-mixed", "gpu") == expected
    assert resolve_precision("16-mixed", "auto") == ("16-mixed", "")


def test_a_cpu_runs_bf16_only_with_amx(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr("clip_inversion.precision.cpu_flags", lambda: {"avx512f", "avx512_bf16"})
    assert resolve_precision("bf16", "auto")[0] == "32-true"
    assert resolve_precision("bf16-true", "cpu") == ("bf16-true", "")  # asked for whole-bf16 weights: as asked
    monkeypatch.setattr("clip_inversion.precision.cpu_flags", lambda: {"amx_bf16"})
    assert resolve_precision("bf16-mixed", "cpu") == ("bf16-mixed", "this CPU has AMX bf16 units")
