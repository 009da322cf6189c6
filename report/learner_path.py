"""Time the learner's path: each notebook top to bottom with a learner's defaults, on a fresh clone.

    python -m report.learner_path          # -> results/learner_path.json
    python -m report.learner_path --keep   # ... and keep the executed notebooks (their outputs) in notebooks/

A fresh clone of the committed HEAD (nothing beside it), `make setup`, then every notebook executed in order at the
profile a learner gets on this machine (`cpu` without a GPU), with no ALIGNLIB_TRAIN: the lesson cells train live,
the long runs show their published records. The target is at most 15 minutes per notebook on a 2-core CPU.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from alignlib.config import default_profile_name
from alignlib.machine import hardware
from report import ROOT, fresh_clone
from report.executed import tidy

TARGET_MIN = 15


def execute(notebook: Path, clone: Path, env: dict) -> float:
    """Execute `notebook` in place in the clone; its wall time in seconds (exits with the error if it fails)."""
    start = time.perf_counter()
    done = subprocess.run([str(clone / ".venv" / "bin" / "jupyter"), "nbconvert", "--to", "notebook", "--execute",
                           "--inplace", "--ExecutePreprocessor.timeout=-1", str(notebook)],
                          cwd=clone / "notebooks", env=env, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{notebook.name} failed on the learner's path:\n{done.stderr[-4000:]}")
    return time.perf_counter() - start


def measure(keep: bool) -> dict:
    with fresh_clone() as (clone, env, commit):
        subprocess.run(["make", "setup"], cwd=clone, env=env, check=True, capture_output=True)
        seconds = {}
        for notebook in sorted((clone / "notebooks").glob("0*.ipynb")):
            seconds[notebook.stem] = round(execute(notebook, clone, env), 1)
            print(f"{notebook.stem}: {seconds[notebook.stem] / 60:.1f} min", flush=True)
            if keep:  # its outputs, with the clone's paths written from the repository root
                executed = json.loads(notebook.read_text())
                tidy(executed, str(clone))
                (ROOT / "notebooks" / notebook.name).write_text(json.dumps(executed, indent=1, ensure_ascii=False) + "\n")
    return {"seconds": seconds, "profile": default_profile_name(), "target_min": TARGET_MIN,
            "within_target": all(s <= TARGET_MIN * 60 for s in seconds.values()), "commit": commit,
            "measured": time.strftime("%Y-%m-%d"), "machine": hardware(),
            "how": "a fresh clone, `make setup`, each notebook executed in order with a learner's defaults "
                   "(HF_HUB_OFFLINE=1, no ALIGNLIB_TRAIN): live lesson cells, published records for the long runs"}


if __name__ == "__main__":
    result = measure(keep="--keep" in sys.argv)
    (ROOT / "results" / "learner_path.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
