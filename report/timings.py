"""Measure how long `make test` takes here, and write the README's timings line.

    python report/timings.py measure-test   # fresh clone + `make test` in a temp dir, with a new venv
    python report/timings.py readme         # rewrite the README section from results/timings.json

`make report`'s time per notebook is in the README's cost table (report/readme_table.py).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RECORD = ROOT / "results" / "timings.json"
START, END = "<!-- timings:start -->", "<!-- timings:end -->"
PHASES = ("the unit tests", "the notebooks at the smoke profile", "the report from the smoke records")


def measure_test() -> dict:
    """Clone the committed HEAD into a temp dir (nothing beside it: the offline data ships in the repository)
    and time `make test` there."""
    sys.path.insert(0, str(ROOT))
    from alignlib.results import cpu_model  # the reader the run records use

    with tempfile.TemporaryDirectory(dir=ROOT.parent) as tmp:
        clone = Path(tmp) / "clone"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        env = {**os.environ, "ALIGNLIB_CACHE_DIR": str(Path(tmp) / "cache")}  # the GGUF conversion is timed too
        env.pop("ALIGNLIB_HH_RLHF_DIR", None)
        start = time.perf_counter()
        setup = subprocess.run(["make", "setup"], cwd=clone, env=env, capture_output=True, text=True)
        setup_s = time.perf_counter() - start
        done = subprocess.run(["make", "test"], cwd=clone, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=clone, capture_output=True,
                                text=True).stdout.strip()
    if setup.returncode or done.returncode:
        sys.exit("make test failed in the fresh clone:\n" + done.stdout[-3000:] + done.stderr[-3000:])
    summary = [line for line in done.stdout.splitlines() if " passed" in line]
    return {"make_test_fresh_clone_s": round(seconds, 1), "setup_s": round(setup_s, 1), "commit": commit,
            "pytest_summaries": summary, "measured": time.strftime("%Y-%m-%d"),
            "machine": f"{cpu_model()}, {os.cpu_count()} CPU cores"}


def readme_section() -> str:
    t = json.loads(RECORD.read_text()) if RECORD.exists() else {}
    if "make_test_fresh_clone_s" not in t:
        return "`make test` has not been timed yet: run `python report/timings.py measure-test`."
    phases = {what: float(re.search(r" in ([0-9.]+)s", line).group(1))
              for what, line in zip(PHASES, t.get("pytest_summaries", []))}
    rest = t["make_test_fresh_clone_s"] - t.get("setup_s", 0.0) - sum(phases.values())  # outside pytest: the studies
    return (f"`make test` on a fresh clone, venv and installs included: **{t['make_test_fresh_clone_s'] / 60:.1f} min** "
            f"on {t['machine']} (commit {t['commit']}, {t['measured']}; `python report/timings.py measure-test`). "
            + (f"Of that, {t['setup_s'] / 60:.1f} min is `make setup`" if "setup_s" in t else "")
            + "".join(f", {seconds / 60:.1f} min {what}" for what, seconds in phases.items())
            + f", and {rest / 60:.1f} min outside pytest: the three studies at the smoke profile"
            + ". The notebooks at `smoke` train the real 135M model (five one-iteration REINFORCE runs and five "
            "one-step reward models, on prompts and pairs cut to 64 tokens, without checkpoints); the unit tests "
            "include two-process runs under `accelerate launch`, and the first one converts the offline GGUF "
            "weights (once per machine).")


def update_readme() -> None:
    from readme_table import replace_between

    readme = ROOT / "README.md"
    readme.write_text(replace_between(readme.read_text(), START, END, readme_section()))


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "readme"
    if what == "measure-test":
        RECORD.write_text(json.dumps(measure_test(), indent=1) + "\n")
    update_readme()
    print((RECORD.read_text() if RECORD.exists() else "") + readme_section())
