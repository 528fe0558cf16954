"""Launch `python app.py` as a user would, on a free port: for the API and browser tests and the UI benchmark.

The server inherits the environment (TND_CACHE_DIR and TND_BUNDLE_SIZE from the `tiny_bundle`
fixture), runs in a scratch folder so its outputs stay out of the repository, and writes its
output to a log file, never to a pipe that could fill.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping, Sequence

REPO = Path(__file__).resolve().parents[1]
# Debian's Chromium and the flags every headless page of the project (tests, benchmarks, screenshots) uses
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
VIEWPORT = {"width": 1400, "height": 1000}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_app(
    workdir: Path,
    timeout_s: float = 180.0,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    app_file: Path = REPO / "app.py",
) -> Iterator[str]:
    """Start the app in `workdir` (with extra command-line `args` and environment `env`; `app_file`: another
    checkout's app.py), yield its URL once it answers, stop it afterwards."""
    port = free_port()
    env = {
        **os.environ,
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_SERVER_PORT": str(port),
        "GRADIO_ANALYTICS_ENABLED": "False",
        "HF_HUB_OFFLINE": "1",
        **(env or {}),
    }
    log_path = workdir / "app.log"
    url = f"http://127.0.0.1:{port}/"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, str(app_file), *args], cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"app.py exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
                try:
                    with urllib.request.urlopen(url, timeout=2):
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(
                            f"app.py did not answer within {timeout_s:g} s:\n{log_path.read_text()[-3000:]}"
                        ) from None
                    time.sleep(0.5)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
