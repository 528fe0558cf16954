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


def test_threshold_crossing_interpolates_between_evaluations():
    from benchmarks.learning import crossing

    curve = [{"tokens": 0.0, "m": 0.0}, {"tokens": 100.0, "m": 0.4}, {"tokens": 200.0, "m": 0.8}]
    assert crossing(curve, "m", 0.6, "up") == pytest.approx(150.0)
    assert crossing(curve, "m", 0.4, "up") == pytest.approx(100.0)
    assert crossing(curve, "m", 0.9, "up") is None
    falling = [{"tokens": 0.0, "m": 500.0}, {"tokens": 50.0, "m": 100.0}, {"tokens": 150.0, "m": 20.0}]
    assert crossing(falling, "m", 60.0, "down") == pytest.approx(100.0)
    assert crossing(falling, "m", 600.0, "down") == 0.0


def test_thresholds_lie_between_the_random_student_and_the_teacher():
    from benchmarks.learning import thresholds

    ref = {
        "eval/grammaticality": {"init": 0.0, "teacher": 0.9},
        "eval/words_acquired": {"init": 2.0, "teacher": 102.0},
        "eval/perplexity": {"init": 400.0, "teacher": 4.0},
        "eval/teacher_student_kl": {"init": 3.0, "teacher": 0.0},
    }
    th = thresholds(ref)
    assert th["eval/grammaticality"][0.5] == pytest.approx(0.45)
    assert th["eval/words_acquired"][0.8] == pytest.approx(82.0)
    assert th["eval/perplexity"][0.5] == pytest.approx(40.0)  # geometric midpoint of 400 and 4
    assert th["eval/teacher_student_kl"][0.5] == pytest.approx(1.5)


@pytest.mark.slow
def test_learning_quick(tiny_bundle, tmp_path):
    from benchmarks import learning

    assert learning.main(["--quick", "--out-dir", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "bench_learning.json").read_text())
    assert {r["variant"] for r in data["runs"]} == set(learning.VARIANTS)
    budget = data["budget"]
    for r in data["runs"]:
        curve = r["curve"]
        assert curve[0]["tokens"] == 0 and curve[-1]["tokens"] >= budget, r["variant"]
        assert curve[-1]["tokens"] < 3 * budget, f"{r['variant']} ran far past the shared budget"
        assert all(math.isfinite(p["eval/perplexity"]) for p in curve)
    assert (tmp_path / "learning_curves.png").stat().st_size > 10_000
    assert "Tokens needed to reach each threshold" in (tmp_path / "bench_learning.md").read_text()


@pytest.mark.slow
@pytest.mark.browser
def test_ui_overhead_quick(tiny_bundle, tmp_path):
    from benchmarks import ui_overhead

    if not os.path.exists(ui_overhead.CHROMIUM):
        pytest.skip(f"{ui_overhead.CHROMIUM} is missing: apt-get install -y chromium")
    assert ui_overhead.main(["--quick", "--out-dir", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "bench_ui_overhead.json").read_text())
    (headless,), (ui,), (stop,) = data["headless"], data["ui"], data["stops"]
    assert headless["steps"] == ui["steps"] == data["steps"]
    assert headless["steps_per_s"] > 0 and ui["steps_per_s"] > 0
    assert ui["start_to_first_s"] > 0 and 0 < stop["job_stop_s"] <= stop["page_stop_s"]
    assert stop["stopped_at"] >= stop["job_step_at_click"] >= 1
    assert ui["cpu_s_per_step"]["app server"] > 0 and ui["cpu_s_per_step"]["browser"] > 0
    assert "Stop click to job stopped" in (tmp_path / "bench_ui_overhead.md").read_text()


@pytest.mark.slow
def test_memory_plan_quick(tmp_path):
    from benchmarks import memory_plan

    assert memory_plan.main(["--quick", "--out-dir", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "bench_memory_plan.json").read_text())
    points = {p["name"]: p for p in data["points"]}
    assert set(points) == set(memory_plan.CONFIGURATIONS)
    for p in points.values():
        assert p["measured_gb"] > 0 and p["planned_gb"] > 0 and math.isfinite(p["error"])
    assert points["lora"]["trainable_parameters"] < points["full"]["trainable_parameters"]
    assert "LoRA against full fine-tuning" in (tmp_path / "bench_memory_plan.md").read_text()


@pytest.mark.slow
def test_gpu_check_tiny_on_cpu(tmp_path, monkeypatch):
    """The GPU check's whole path (full fine-tuning, then LoRA) at tiny sizes on the CPU, checks included."""
    import torch

    from benchmarks import gpu_check

    monkeypatch.setenv("ACCELERATE_USE_CPU", "true")  # gpu_check sets it for --device cpu: undone after the test
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # its KL check compares fixed-seed runs: one thread keeps them reproducible
    try:
        assert gpu_check.main(["--device", "cpu", "--tiny", "--out-dir", str(tmp_path)]) == 0
    finally:
        torch.set_num_threads(threads)
    data = json.loads((tmp_path / "bench_gpu.json").read_text())
    assert [r["name"] for r in data["runs"]] == ["full fine-tuning", "LoRA"] and data["problems"] == []
    for r in data["runs"]:
        assert r["steps"] == gpu_check.TINY.steps and r["losses_finite"]
        assert r["samples_per_s"] > 0 and r["tokens_per_s"] > 0 and 0 < r["generation_share"] < 1
        assert r["teacher_student_kl_last"] < r["teacher_student_kl_first"]
        assert r["peak_memory_gb"] > 0 and r["planned_memory_gb"] > 0
    assert "2-process run: not run" in (tmp_path / "bench_gpu.md").read_text()
    assert gpu_check.main(["--device", "cpu", "--tiny"]) == 2, "tiny numbers must not overwrite docs/"
