"""Measure how long `make test` takes on a fresh clone, and show it in the README's cost table.

    python -m report.timings   # clone HEAD into a temp dir, `make setup` and `make test` there -> results/timings.json

`make report`'s cost comes from the run records themselves (report.sections: costs).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from alignlib.machine import cpu_model
from report import ROOT, fresh_clone, sections


def run(step: str, clone: Path, env: dict) -> subprocess.CompletedProcess:
    done = subprocess.run(["make", step], cwd=clone, env=env, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"make {step} failed in the fresh clone:\n" + done.stdout[-3000:] + done.stderr[-3000:])
    return done


def measure_test() -> dict:
    """Time `make setup` and `make test` on a fresh clone (`report.fresh_clone`), with a new venv."""
    with fresh_clone() as (clone, env, commit):
        start = time.perf_counter()
        run("setup", clone, env)
        setup_s = time.perf_counter() - start
        done = run("test", clone, env)
        seconds = time.perf_counter() - start
    return {"make_test_fresh_clone_s": round(seconds, 1), "setup_s": round(setup_s, 1), "commit": commit,
            "pytest_summaries": [line for line in done.stdout.splitlines() if " passed" in line],
            "measured": time.strftime("%Y-%m-%d"), "machine": f"{cpu_model()}, {os.cpu_count()} CPU cores"}


if __name__ == "__main__":
    (ROOT / "results" / "timings.json").write_text(json.dumps(measure_test(), indent=1) + "\n")
    sections.update(["costs"])
    print(sections.test_cost())
