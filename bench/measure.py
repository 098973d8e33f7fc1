"""Run a command in a child process and measure its wall time and peak RSS."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

import psutil

POLL_SECONDS = 0.05


@dataclass
class Measured:
    seconds: float
    peak_rss_mb: float
    result: dict


def run_measured(args: list[str], env: dict[str, str] | None = None, last_json: bool = True) -> Measured:
    """Run `python args...`; its last stdout line must be JSON (the step's result), or,
    with last_json=False, its whole stdout."""
    started = time.perf_counter()
    child = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=env)
    peak = [0]

    def sample() -> None:
        process = psutil.Process(child.pid)
        while child.poll() is None:
            try:
                rss = process.memory_info().rss + sum(c.memory_info().rss for c in process.children(recursive=True))
            except psutil.Error:
                break
            peak[0] = max(peak[0], rss)
            time.sleep(POLL_SECONDS)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = child.communicate()
    seconds = time.perf_counter() - started
    sampler.join()
    if child.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({child.returncode}):\n{stderr[-3000:]}")
    output = stdout.strip().splitlines()[-1] if last_json else stdout
    return Measured(seconds, peak[0] / 2**20, json.loads(output))
