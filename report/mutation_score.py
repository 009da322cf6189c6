"""Summarise a `mutmut run` (the mutants/ folder) into results/mutants.json: the mutation score per
module and overall, and every surviving mutant's name, so that the score is a record written by code
(docs/mutation-testing.md shows it).

    python -m report.mutation_score   # after `mutmut run`; `make mutants` does both

Killed: a test failed with the mutant in place; timeout: the tests ran 15 times longer than without
it (a mutant that loops forever), which counts as killed. Survived: every selected test passed.
No tests: no selected test calls the mutated function; it counts as survived. The score is
(killed + timeout) / (killed + timeout + survived + no tests).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from report import ROOT, sections

TIMEOUT = {36: "timeout", 24: "timeout", -24: "timeout", 152: "timeout", 255: "timeout"}
STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests", 34: "skipped", None: "not checked",
          **TIMEOUT}


def summarise(mutants: Path) -> dict:
    modules, survivors = {}, []
    for meta in sorted((mutants / "alignlib").glob("*.py.meta")):
        exit_codes = json.loads(meta.read_text())["exit_code_by_key"]
        counts = Counter(STATUS.get(code, "suspicious") for code in exit_codes.values())
        caught = counts["killed"] + counts["timeout"]
        judged = caught + counts["survived"] + counts["no tests"]
        module = meta.name.removesuffix(".py.meta")
        modules[module] = {**counts, "mutants": len(exit_codes), "score": caught / judged if judged else None}
        survivors += sorted(k for k, code in exit_codes.items() if STATUS.get(code) in ("survived", "no tests"))
    total = Counter()
    for counts in modules.values():
        total.update({k: v for k, v in counts.items() if isinstance(v, int)})
    caught = total["killed"] + total["timeout"]
    judged = caught + total["survived"] + total["no tests"]
    # the code mutated: mutmut re-generates and re-checks every function whose source changed since its
    # last run (its meta files keep a hash per function), so the results describe the current HEAD
    # (mutmut-stats.json's git_commit is the commit of its first run)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=ROOT).stdout.strip()
    return {"tool": "mutmut", "config": "pyproject.toml [tool.mutmut]", "code_version": commit or "unknown",
            "created": time.strftime("%Y-%m-%d %H:%M:%S"), "score": caught / judged if judged else None,
            "killed": total["killed"], "timeout": total["timeout"], "survived": total["survived"], "no_tests": total["no tests"],
            "not_checked": total["not checked"], "mutants": total["mutants"], "modules": modules, "survivors": survivors}


if __name__ == "__main__":
    mutants = ROOT / "mutants"
    if not (mutants / "alignlib").exists():
        sys.exit("no mutants/ folder: run `mutmut run` first (or `make mutants`)")
    summary = summarise(mutants)
    summary["complete"] = summary["not_checked"] == 0  # False: the run was stopped; the score covers the checked ones
    out = ROOT / "results" / "mutants.json"
    out.write_text(json.dumps(summary, indent=1) + "\n")
    sections.update(["mutants"])
    print(f"mutation score {summary['score']:.1%} ({summary['killed'] + summary['timeout']} caught, "
          f"{summary['not_checked']} of {summary['mutants']} not checked); wrote {out}")
