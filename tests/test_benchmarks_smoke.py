"""Each benchmark script runs end to end on a tiny budget, so the published numbers can always be redone.

These check that the scripts work and that what they compare is comparable (equal response lengths,
every trainer measured, files written); the numbers themselves are not asserted, they are noise at
this size.
"""

from __future__ import annotations

import json
import math
import os
import time

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def test_write_report_refreshes_only_its_own_section(tmp_path):
    from benchmarks.common import write_report

    page = tmp_path / "BENCHMARKS.md"
    page.write_text("# B\n<!-- a:begin -->\nold a\n<!-- a:end -->\n<!-- b:begin -->\nold b\n<!-- b:end -->\n")
    write_report(tmp_path, "a", "new a\n| x |", {"x": 1})
    text = page.read_text()
    assert "new a\n| x |\n<!-- a:end -->" in text and "old a" not in text
    assert "old b" in text
    assert json.loads((tmp_path / "bench_a.json").read_text()) == {"x": 1}
    assert (tmp_path / "bench_a.md").read_text().startswith("new a")


def test_compute_clock_counts_outermost_calls_once():
    import torch

    from benchmarks.throughput import ComputeClock

    outer = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 1))
    with ComputeClock() as clock:
        start = time.perf_counter()
        loss = outer(torch.randn(3, 4)).sum()
        loss.backward()
        end = time.perf_counter()
    kinds = [k for _, _, k in clock.intervals]
    assert kinds == ["forward", "backward"]  # the two inner Linear calls are inside the outer one
    spent = clock.seconds(start, end)
    assert 0 < spent["forward"] + spent["backward"] <= end - start
    assert torch.nn.Module.__call__.__name__ != "timed", "patches are undone on exit"


@pytest.mark.slow
def test_throughput_quick(tmp_path):
    from benchmarks import throughput

    assert throughput.main(["--quick", "--out-dir", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "bench_throughput.json").read_text())
    rl, kd = data["rl"]["trainers"], data["distill"]["trainers"]
    assert set(rl) == {"ours_off", "rloo", "grpo", "ours_on"} and set(kd) == {"ours_on", "distillation"}
    length = data["rl"]["work"]["response_length"]
    for t in list(rl.values()) + list(kd.values()):
        assert t["samples_per_s"]["median"] > 0
        assert t["response_len"] == length, f"{t['name']} did not generate exactly {length} tokens: unequal work"
        assert sum(t["compute_s"].values()) < t["instrumented_step_s"]
    assert math.isfinite(rl["grpo"]["ours_over_this"]["median"])
    assert data["scaling"][0]["peak_rss_mb"] > 0
    text = (tmp_path / "bench_throughput.md").read_text()
    assert "python -m benchmarks.throughput --quick" in text and "TRL GRPOTrainer" in text
