"""Measure how long the README's commands take here, and write the README's timings section.

    python report/timings.py measure-test   # fresh clone + `make test` in a temp dir, with a new venv
    python report/timings.py readme         # rewrite the README section from results/timings.json

`make report`'s time is the sum of the notebooks' recorded wall times (results/cpu/*.json).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RECORD = ROOT / "results" / "timings.json"
START, END = "<!-- timings:start -->", "<!-- timings:end -->"
NOTEBOOK_RECORDS = {"01_data": ["data"], "02_scalar_reward_model": ["rm_scalar"],
                    "03_reinforce": ["reinforce_ema", "reinforce_rloo", "reinforce_ema_kl"],
                    "04_probabilistic_reward_model": ["rm_prob", "rm_prob_beats", "reinforce_prob_expected",
                                                      "reinforce_prob_sampled"],
                    "05_comparison": ["comparison"]}


def measure_test() -> dict:
    """Clone the committed HEAD beside ../shared into a temp dir and time `make test` there."""
    with tempfile.TemporaryDirectory(dir=ROOT.parent) as tmp:
        clone = Path(tmp) / "clone"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        env = {**os.environ, "ALIGNLIB_HH_RLHF_DIR": str(ROOT.parent / "shared" / "data" / "hh-rlhf"),
               "ALIGNLIB_CACHE_DIR": str(Path(tmp) / "cache")}  # the GGUF conversion is timed too
        start = time.perf_counter()
        done = subprocess.run(["make", "test"], cwd=clone, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=clone, capture_output=True,
                                text=True).stdout.strip()
    if done.returncode:
        sys.exit("make test failed in the fresh clone:\n" + done.stdout[-3000:] + done.stderr[-3000:])
    summary = [line for line in done.stdout.splitlines() if " passed" in line]
    return {"make_test_fresh_clone_s": round(seconds, 1), "commit": commit, "pytest_summaries": summary,
            "measured": time.strftime("%Y-%m-%d"), "machine": f"{os.cpu_count()} CPU cores, {platform.machine()}"}


def notebook_times(profile: str = "cpu") -> dict:
    out = {}
    for nb, names in NOTEBOOK_RECORDS.items():
        paths = [ROOT / "results" / profile / f"{n}.json" for n in names]
        if all(p.exists() for p in paths):
            out[nb] = sum(json.loads(p.read_text())["wall_time_s"] for p in paths)
    return out


def readme_section() -> str:
    t = json.loads(RECORD.read_text()) if RECORD.exists() else {}
    lines = ["| command | time here |", "|---|---|"]
    if "make_test_fresh_clone_s" in t:
        lines.append(f"| `make test` on a fresh clone (venv and installs included) | "
                     f"{t['make_test_fresh_clone_s'] / 60:.1f} min (commit {t['commit']}, {t['measured']}) |")
    nbs = notebook_times()
    for nb, s in nbs.items():
        lines.append(f"| `make report` at `cpu`: notebook {nb} (recorded runs) | {s / 60:.1f} min |")
    if nbs:
        lines.append(f"| `make report` at `cpu`, all notebooks above (recorded runs) | {sum(nbs.values()) / 60:.0f} min |")
    return "\n".join(lines) + ("\n\nNotebook times add up the `wall_time_s` of the run records each notebook writes (model "
                               "loading between runs is not included); `make test` is timed by "
                               "`python report/timings.py measure-test`.")


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
