"""precision: auto on a CPU with bf16 units is chosen by timing, never slower than fp32 (no model needed)."""

from __future__ import annotations

from typing import Any

import pytest

from cjkrag.ingest.embedding import sentence_transformer as st


@pytest.mark.parametrize(
    ("timings", "expected"),
    [
        ({"fp32": 1.0, "bf16-autocast": 1.3}, "fp32"),  # bf16 slower (measured so on the CPU)
        ({"fp32": 1.0, "bf16-autocast": 0.95}, "fp32"),  # within noise: keep fp32
        ({"fp32": 1.0, "bf16-autocast": 0.5}, "bf16-autocast"),  # clearly faster
        ({"fp32": 1.0}, "fp32"),
    ],
)
def test_pick_cpu_precision(timings: dict[str, float], expected: str) -> None:
    assert st.pick_cpu_precision(timings) == expected


def test_auto_measures_only_on_cpus_with_bf16_units(monkeypatch: Any) -> None:
    import torch

    monkeypatch.setattr(st, "_cpu_has_bf16", lambda torch: True)
    assert st._choose_precision(torch, "cpu", "auto", None) == "measure"
    assert st._choose_precision(torch, "cpu", "bf16", None) == "bf16-autocast"  # explicit: honoured
    assert st._choose_precision(torch, "cpu", "fp32", None) == "fp32"
    monkeypatch.setattr(st, "_cpu_has_bf16", lambda torch: False)
    assert st._choose_precision(torch, "cpu", "auto", None) == "fp32"
    assert st._choose_precision(torch, "cuda", "auto", "float16") == "fp16"
