"""What every benchmark shares: the machine description, quiet libraries, and writing results to docs/.

Each script writes `bench_<name>.md` and `bench_<name>.json` into its output folder and, when that
folder holds a BENCHMARKS.md with `<!-- <name>:begin -->` / `<!-- <name>:end -->` markers, replaces
the text between them, so the published page always shows the last run and the command behind it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import re
import shlex
import statistics
import sys
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parent.parent / "docs"


def quiet_libraries() -> None:
    """No hub access, no progress bars, no per-step chatter from transformers, datasets or accelerate."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import logging
    import warnings

    import datasets
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    datasets.utils.logging.set_verbosity_error()
    logging.getLogger("tnd_core").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)


def set_threads(n: int | None) -> None:
    """Pin torch's CPU threads (and OpenMP's, for subprocesses). On a shared 2-core machine, 2 threads
    that must wait for a busy core can be many times slower than 1: pin them when others run too."""
    if n is None:
        return
    import torch

    os.environ["OMP_NUM_THREADS"] = str(n)
    torch.set_num_threads(n)


def machine() -> dict[str, Any]:
    """CPU model and cores, memory, accelerator, library versions and the date of the run."""
    import torch
    import transformers
    import trl

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_gb = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = None
    return {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_gb": mem_gb,
        "gpu": gpu,
        "load_avg_1min_at_start": load,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "trl": trl.__version__,
    }


def machine_line(m: dict[str, Any]) -> str:
    device = f"GPU {m['gpu']}" if m["gpu"] else "CPU only"
    return (
        f"{m['date']}; {m['cpu']}, {m['cores']} cores ({m['torch_threads']} torch threads), "
        f"{m['memory_gb']} GB RAM, {device}; "
        f"load average {m['load_avg_1min_at_start']:.2f} at start; Python {m['python']}, torch {m['torch']}, "
        f"transformers {m['transformers']}, TRL {m['trl']}"
    )


def command_line(module: str, argv: list[str] | None = None) -> str:
    """The command that reproduces this run (`argv`: the arguments given to main, default sys.argv)."""
    args = sys.argv[1:] if argv is None else argv
    return " ".join(["python -m", module, *map(shlex.quote, args)]).strip()


def summary(values: list[float]) -> dict[str, float]:
    """Median, min and max of repeated measurements."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def write_report(out_dir: str | Path, name: str, markdown: str, data: dict[str, Any]) -> Path:
    """Write bench_<name>.md/.json and refresh the matching section of BENCHMARKS.md if it has one."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"bench_{name}.md").write_text(markdown.rstrip() + "\n")
    (out / f"bench_{name}.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
    refresh_page(out, name)
    return out / f"bench_{name}.md"


def refresh_page(out_dir: str | Path, name: str) -> bool:
    """Copy bench_<name>.md between the `<name>` markers of out_dir/BENCHMARKS.md; False if there is no such section."""
    out = Path(out_dir)
    page, report = out / "BENCHMARKS.md", out / f"bench_{name}.md"
    if not (page.is_file() and report.is_file()):
        return False
    text = page.read_text()
    pattern = re.compile(rf"(<!-- {name}:begin -->\n).*?(<!-- {name}:end -->)", re.S)
    if not pattern.search(text):
        return False
    page.write_text(pattern.sub(lambda m: m.group(1) + report.read_text().rstrip() + "\n" + m.group(2), text))
    return True


def table(header: list[str], rows: list[list[Any]]) -> str:
    """A markdown table; floats keep 3 significant digits."""

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    # `python -m benchmarks.common [DIR]`: put every bench_*.md of DIR (default docs/) into BENCHMARKS.md,
    # e.g. after copying bench_throughput_cuda.* back from a GPU machine.
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else DOCS
    for report in sorted(folder.glob("bench_*.md")):
        name = report.stem.removeprefix("bench_")
        print(f"{name}: {'refreshed' if refresh_page(folder, name) else 'no section in BENCHMARKS.md'}")
