"""The PDF report and the generated sections of the README and docs/, made from the run records.

    python -m report.build          # report/report.pdf (report-<profile>.pdf at another profile)
    python -m report.sections       # every generated section of README.md and docs/*.md
    python -m report.timings        # time `make test` on a fresh clone -> results/timings.json
    python -m report.learner_path   # time each notebook at a learner's defaults on a fresh clone
    python -m report.mutation_score # after `mutmut run`: results/mutants.json
    python -m report.colab_links    # the Colab badges and clone cells follow pyproject.toml
    python -m report.executed NOTEBOOK...  # executed notebooks: paths from the repository root, bars at their end
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def load(path: str) -> dict | None:
    """The JSON file at `path` (from the repository root: "results/cpu/rm_scalar.json"), or None where it is not."""
    file = ROOT / path
    return json.loads(file.read_text()) if file.exists() else None


@contextlib.contextmanager
def fresh_clone():
    """A clone of the committed HEAD in a temp dir beside the repository (nothing else beside it: the offline data
    ships in the repository) and the environment a new user has: no ALIGNLIB_* settings, the hub offline, an empty
    model cache (so the GGUF conversion is timed too). Yields (clone, env, short commit); removed on exit."""
    with tempfile.TemporaryDirectory(dir=ROOT.parent) as tmp:
        clone = Path(tmp) / "clone"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("ALIGNLIB_")}
        env |= {"HF_HUB_OFFLINE": "1", "ALIGNLIB_CACHE_DIR": str(Path(tmp) / "cache")}
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=clone, capture_output=True,
                                text=True, check=True).stdout.strip()
        yield clone, env, commit
