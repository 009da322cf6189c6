"""The PDF report and the generated sections of the README and docs/, made from the run records.

    python -m report.build          # report/report.pdf (report-<profile>.pdf at another profile)
    python -m report.sections       # every generated section of README.md and docs/*.md
    python -m report.timings        # time `make test` on a fresh clone -> results/timings.json
    python -m report.mutation_score # after `mutmut run`: results/mutants.json
    python -m report.colab_links    # the Colab badges and clone cells follow pyproject.toml
    python -m report.relative_paths NOTEBOOK...  # executed notebooks name paths from the repository root
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def load(path: str) -> dict | None:
    """The JSON file at `path` (from the repository root: "results/cpu/rm_scalar.json"), or None where it is not."""
    file = ROOT / path
    return json.loads(file.read_text()) if file.exists() else None
