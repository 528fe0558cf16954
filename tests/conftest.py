"""Shared fixtures. Nothing here may reach the model hub: every model is built from a config or the tiny bundle."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
# The runs an app started by a test writes go under this session's own runs root, not the user's cache
os.environ.setdefault("TND_RUNS_ROOT", tempfile.mkdtemp(prefix="tnd-test-runs-"))

REPO = Path(__file__).resolve().parents[1]


def cache_dir_for_tests() -> Path:
    """$TND_TEST_CACHE_DIR, else tests/artifacts/cache (git-ignored, so local re-runs reuse the bundle)."""
    return Path(os.environ.get("TND_TEST_CACHE_DIR") or REPO / "tests" / "artifacts" / "cache")


@pytest.fixture(scope="session")
def tiny_bundle():
    """The tiny bundle, built once per session (reused across sessions), with TND_CACHE_DIR and
    TND_BUNDLE_SIZE=tiny set for the rest of the session so 'bundle' sources resolve to it."""
    from tnd_core.bundle import ensure_bundle

    cache = cache_dir_for_tests()
    patch = pytest.MonkeyPatch()
    patch.setenv("TND_CACHE_DIR", str(cache))
    patch.setenv("TND_BUNDLE_SIZE", "tiny")
    paths = ensure_bundle("tiny", cache)
    yield paths
    patch.undo()


@pytest.fixture
def tok():
    """The word-level tokenizer of the tiny test models (tests/tnd_tiny.py)."""
    from tnd_tiny import make_tokenizer

    return make_tokenizer()
