"""Building the bundle once under the cache root and reusing it.

`ensure_bundle()` returns the bundle's paths, building it first if needed; `build_bundle()` is what
`tnd bundle` runs. The build writes into a temporary folder and renames it into place at the end, so
a half-built bundle is never used; `bundle.json` records the recipe version (a new version triggers
a rebuild), the sizes, the build time and the measured quality of each part.
"""

from __future__ import annotations

import errno
import json
import logging
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from tnd_core.bundle.progress import BuildProgress, ProgressFn
from tnd_core.bundle.recipe import build_into
from tnd_core.bundle.spec import (
    BUNDLE_VERSION,
    MANIFEST,
    SIZES,
    BundleError,
    BundlePaths,
    BundleSpec,
    bundle_root,
    resolve_size,
)
from tnd_core.cache import cache_root

logger = logging.getLogger(__name__)

_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_ACCESS_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EEXIST}


def _is_current(root: Path, size: str) -> bool:
    try:
        info = json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return info.get("version") == BUNDLE_VERSION and info.get("size") == size


# ---------------------------------------------------------------------- public API
def ensure_bundle(
    size: str | None = None, cache_dir: str | Path | None = None, progress: ProgressFn | None = None
) -> BundlePaths:
    """The bundle's paths, building it first if it is missing or from an older recipe version."""
    size = resolve_size(size)
    root = bundle_root(size, cache_dir)
    if _is_current(root, size):
        return BundlePaths.under(root)
    return build_bundle(size, cache_dir, force=False, progress=progress)


def build_bundle(
    size: str = "default", cache_dir: str | Path | None = None, force: bool = False, progress: ProgressFn | None = None
) -> BundlePaths:
    """Build the bundle (unless a current one exists and not `force`) and return its paths.

    Raises BundleError with advice when the cache folder is not writable or the disk is full.
    """
    size = resolve_size(size)
    spec = SIZES[size]
    base = cache_root(cache_dir)
    root = base / f"bundle-{size}"
    with _user_facing_os_errors(base, spec):
        _check_writable(base, spec)
        with _build_lock(base, size):
            if not force and _is_current(root, size):
                return BundlePaths.under(root)
            for stale in base.glob(f".bundle-{size}.*"):
                shutil.rmtree(stale, ignore_errors=True)
            staging = base / f".bundle-{size}.building-{uuid.uuid4().hex[:8]}"
            staging.mkdir()
            try:
                with _one_thread():
                    build_into(BundlePaths.under(staging), size, spec, BuildProgress(progress, f"bundle {size}"))
                _swap_into_place(staging, root)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    logger.info("bundle %s ready at %s", size, root)
    return BundlePaths.under(root)


# ---------------------------------------------------------------------- file-system safety
@contextmanager
def _user_facing_os_errors(base: Path, spec: BundleSpec) -> Iterator[None]:
    try:
        yield
    except BundleError:
        raise
    except OSError as exc:
        raise _as_bundle_error(exc, base, spec) from exc
    except RuntimeError as exc:  # safetensors and torch report a full disk as RuntimeError
        if "No space left" in str(exc) or "os error 28" in str(exc):
            raise _as_bundle_error(OSError(errno.ENOSPC, str(exc)), base, spec) from exc
        raise


def _as_bundle_error(exc: OSError, base: Path, spec: BundleSpec) -> BundleError:
    hint = "Set TND_CACHE_DIR (or pass --cache_dir) to another folder."
    if exc.errno in _DISK_ERRNOS:
        return BundleError(
            f"not enough disk space to build the bundle in {base} (it needs about {spec.required_mib} MiB): "
            f"{exc.strerror or exc}. Free some space or choose another folder. {hint}"
        )
    if exc.errno in _ACCESS_ERRNOS:
        return BundleError(f"cannot write the bundle to {base}: {exc.strerror or exc} ({exc.filename or base}). {hint}")
    return BundleError(f"could not build the bundle in {base}: {exc}. {hint}")


def _check_writable(base: Path, spec: BundleSpec) -> None:
    base.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=base, prefix=".write-test-"):
        pass
    free = shutil.disk_usage(base).free
    if free < spec.required_mib * 2**20:
        raise OSError(errno.ENOSPC, f"only {free / 2**20:.0f} MiB free", str(base))


@contextmanager
def _one_thread() -> Iterator[None]:
    """Run torch on one thread: these models are too small to gain from intra-op threads, and on a
    shared CPU two threads per process spin against other processes (3-4x slower on 2 busy cores)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextmanager
def _build_lock(base: Path, size: str) -> Iterator[None]:
    """One builder per bundle at a time, across processes (the app and a test run may race)."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; concurrent first builds are unlikely there
        yield
        return
    with open(base / f"bundle-{size}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _swap_into_place(staging: Path, root: Path) -> None:
    old = root.with_name(f".{root.name}.old-{uuid.uuid4().hex[:8]}")
    if root.exists():
        root.rename(old)
    staging.rename(root)
    shutil.rmtree(old, ignore_errors=True)
