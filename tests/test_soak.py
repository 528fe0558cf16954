"""Soak: the real app, its Train tab watched in headless Chromium, a long run of cheap steps; the server's
resident memory must stay flat after the warm-up (least-squares RSS slope under 1 MB/min).

Left out of the default run (marker `soak`, ~12 min): `python -m pytest -m soak tests/test_soak.py`.
TND_SOAK_MINUTES (default 10) and TND_SOAK_WARMUP_MINUTES (default 2) set its length.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from benchmarks.app_server import REPO
from benchmarks.memory_soak import CHROMIUM, TARGET_MB_PER_MIN, AppUnderTest, soak

MINUTES = float(os.environ.get("TND_SOAK_MINUTES", "10"))
WARMUP_MINUTES = float(os.environ.get("TND_SOAK_WARMUP_MINUTES", "2"))

# only `soak`: a `-m slow` or `-m browser` selection must not start a 10-minute run
pytestmark = [pytest.mark.soak, pytest.mark.timeout(int(MINUTES * 60) + 600)]


def test_a_watched_run_holds_flat_memory(tiny_bundle):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing: apt-get install -y chromium")
    (result,) = soak(MINUTES, WARMUP_MINUTES, sample_s=5.0, apps={"app": AppUnderTest(REPO / "app.py")})
    assert result["steps_after_warmup"] > 0 and result["page_step_at_end"] > 0  # it trained, and the page followed
    assert result["slope_mb_per_min"] < TARGET_MB_PER_MIN, {k: v for k, v in result.items() if k != "samples"}
