"""Compare flood: the owner's training step rate while other sessions call Compare in a loop.

One `python app.py --hosted` server trains the owner's run (the tiny bundle's models, small steps)
while the benchmark alternates quiet windows and flood windows, where `--sessions` gradio_client
sessions call `/compare` back to back. Quiet and flood windows interleave, so background load hits
both alike; the ratio is the mean flood step rate over the mean quiet step rate. Two settings run
one after the other in separate servers:

- hosted: the app's defaults (per-session Compare limit, Compare's share of a running job's time);
- unthrottled: no per-session limit and a share of 1 (Compare may take all the time the run leaves),
  which is what the app did before the budget.

  python -m benchmarks.compare_flood                            # ~8 min; writes docs/bench_compare_flood.*
  python -m benchmarks.compare_flood --quick --out-dir /tmp/c   # the smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.app_server import running_app
from benchmarks.common import DOCS, command_line, machine, machine_line, quiet_libraries, table, write_report

RUN = (
    "steps: 100000\nbatch_size: 4\nmini_batch_size: 4\nppo_epochs: 1\nmax_new_tokens: 8\n"
    "logging_steps: 1\neval_steps: 0\nsave_steps: 0\noutput_dir: flood\n"
)
SETTINGS = {
    "hosted": {},
    "unthrottled": {"TND_MAX_COMPARE_PER_MINUTE": "0", "TND_COMPARE_SHARE": "1"},
}


def _step_at(client: Any) -> tuple[float, int]:
    state = client.predict(api_name="/training_status")
    return time.monotonic(), int(state["step"])


def flood(url: str, sessions: int, seconds: float) -> dict[str, int]:
    """`sessions` gradio_client sessions calling `/compare` back to back for `seconds`; counts of answers."""
    from gradio_client import Client

    stop = threading.Event()
    served, refused = [0], [0]

    def loop() -> None:
        stranger = Client(url, verbose=False)
        while not stop.is_set():
            answer = stranger.predict("the dog", 0, api_name="/compare")
            if "error" in answer:
                refused[0] += 1
                time.sleep(0.2)  # a refused visitor tries again a moment later
            else:
                served[0] += 1

    threads = [threading.Thread(target=loop, daemon=True) for _ in range(sessions)]
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join(120)
    return {"compare_served": served[0], "compare_refused": refused[0]}


def _window(client: Any, url: str, seconds: float, sessions: int) -> dict[str, float]:
    """Steps per second of the owner's run over one window, with `sessions` flooding Compare.

    The flood runs in another process at the lowest CPU priority: on a Space the visitors' clients run
    on their own machines, so their CPU must not count against the server's.
    """
    worker = None
    if sessions:
        command = [sys.executable, "-m", "benchmarks.compare_flood", "--flood", url]
        command += ["--sessions", str(sessions), "--seconds", str(seconds + 4)]
        worker = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, preexec_fn=lambda: os.nice(19))
        time.sleep(2.0)  # let the flood reach the server before timing
    t0, s0 = _step_at(client)
    time.sleep(seconds)
    t1, s1 = _step_at(client)
    counts = {"compare_served": 0, "compare_refused": 0}
    if worker is not None:
        out, _ = worker.communicate(timeout=180)
        counts = json.loads(out.strip().splitlines()[-1])
    return {"steps_per_s": (s1 - s0) / (t1 - t0), **counts}


def measure(setting: str, rounds: int, seconds: float, sessions: int) -> dict[str, Any]:
    """Interleaved quiet and flood windows on one server in `setting`."""
    from gradio_client import Client

    with tempfile.TemporaryDirectory(prefix="tnd-flood-") as workdir:
        env = {"TND_DATA_ROOT": str(Path(workdir) / "data"), "TND_MAX_STEPS": "100000", **SETTINGS[setting]}
        with running_app(Path(workdir), args=["--hosted"], env=env) as url:
            client = Client(url, verbose=False)
            answer = client.predict("owner", RUN, api_name="/start_training")
            if not answer.startswith("started"):
                raise RuntimeError(answer)
            while client.predict(api_name="/training_status")["step"] < 5:  # past start-up and first steps
                time.sleep(0.5)
            quiet, flooded = [], []
            for _ in range(rounds):
                quiet.append(_window(client, url, seconds, 0))
                flooded.append(_window(client, url, seconds, sessions))
            client.predict("owner", api_name="/stop_training")
    quiet_rate = statistics.mean(w["steps_per_s"] for w in quiet)
    flood_rate = statistics.mean(w["steps_per_s"] for w in flooded)
    return {
        "setting": setting,
        "quiet_steps_per_s": quiet_rate,
        "flood_steps_per_s": flood_rate,
        "ratio": flood_rate / quiet_rate if quiet_rate else float("nan"),
        "compare_served": sum(w["compare_served"] for w in flooded),
        "compare_refused": sum(w["compare_refused"] for w in flooded),
        "windows": {"quiet": quiet, "flood": flooded},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=4, help="quiet/flood window pairs per setting")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of one window")
    parser.add_argument("--sessions", type=int, default=4, help="sessions calling Compare in a loop")
    parser.add_argument("--quick", action="store_true", help="1 round of 6 s windows, hosted setting only")
    parser.add_argument("--out-dir", default=str(DOCS))
    parser.add_argument("--flood", metavar="URL", help=argparse.SUPPRESS)  # the flood worker of one window
    args = parser.parse_args(argv)
    if args.flood:
        sys.stdout.write(json.dumps(flood(args.flood, args.sessions, args.seconds)) + "\n")
        return 0
    quiet_libraries()
    if args.quick:
        args.rounds, args.seconds = 1, min(args.seconds, 6.0)
    settings = ["hosted"] if args.quick else list(SETTINGS)
    info = machine()  # before the servers start: its load average is the background load
    results = [measure(s, args.rounds, args.seconds, args.sessions) for s in settings]
    rows = [
        [
            r["setting"],
            r["quiet_steps_per_s"],
            r["flood_steps_per_s"],
            r["ratio"],
            r["compare_served"],
            r["compare_refused"],
        ]
        for r in results
    ]
    markdown = "\n".join(
        [
            "# Compare flood: the owner's step rate while other sessions call Compare",
            "",
            f"`{command_line('benchmarks.compare_flood', argv)}`",
            "",
            machine_line(info),
            "",
            f"{args.sessions} sessions call `/compare` back to back during flood windows, from another process at "
            "the lowest CPU priority (remote visitors' clients would not share the server's CPU). Quiet and flood "
            f"windows of {args.seconds:g} s alternate, {args.rounds} of each per setting, on one "
            "`python app.py --hosted` server per setting. Ratio: flood steps/s over quiet steps/s (goal: 0.8 or "
            "more with the app's defaults). `unthrottled` turns the per-session limit off and lets Compare take "
            "all the time the run leaves (share 1), as the app did before.",
            "",
            table(
                ["setting", "quiet steps/s", "flood steps/s", "ratio", "Compare served", "Compare refused"],
                rows,
            ),
            "",
        ]
    )
    write_report(args.out_dir, "compare_flood", markdown, {"machine": info, "results": results})
    sys.stdout.write(markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
