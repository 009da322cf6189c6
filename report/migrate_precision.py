"""Add the precision fields to run records made before records stated them (idempotent).

    python report/migrate_precision.py results/cpu

Since the precision became the hardware's choice (`amp="auto"`, alignlib/precision.py), every
record states `device`, `precision`, `precision_requested` and `precision_reason`. Records made
earlier ran with the profile's fixed setting, which their own config holds (`rm.amp`,
`reinforce.amp`; the data card generated in float32; the comparison scored with the profile's
`reinforce.amp`, read from the data card's copy of the profile). This copies that setting into
the new fields and says where it came from; nothing is re-run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def fixed_setting(record: dict, folder: Path) -> tuple[str, str]:
    """(amp, where it was read) of a record made before precision fields existed."""
    config = record["config"]
    if "rm" in config:
        return config["rm"]["amp"], "config.rm.amp"
    if "reinforce" in config and "amp" in config["reinforce"] and record["name"] != "data":
        return config["reinforce"]["amp"], "config.reinforce.amp"
    if record["name"] == "data":
        return "none", "notebook 01 generated its sample reply in float32 (generate_replies' default)"
    profile = json.loads((folder / "data.json").read_text())["config"]
    return profile["reinforce"]["amp"], "the profile's reinforce.amp (data.json's copy), which notebook 05 scored with"


def migrate(path: Path) -> bool:
    record = json.loads(path.read_text())
    if "precision" in record:
        return False
    amp, where = fixed_setting(record, path.parent if path.parent.name != "before_speedups" else path.parent.parent)
    fields = {"device": "cpu", "precision": amp, "precision_requested": amp,
              "precision_reason": f"{amp} fixed by the {record['profile']} profile when this record was made, before "
                                  f"records stated their precision (added later from {where})"}
    out = {}
    for key, value in record.items():
        out[key] = value
        if key == "hardware":
            out.update(fields)
    path.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")
    return True


if __name__ == "__main__":
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "results/cpu")
    changed = [p for p in sorted(folder.glob("*.json")) + sorted(folder.glob("before_speedups/*.json")) if migrate(p)]
    print(f"added precision fields to {len(changed)} records:", *[p.name for p in changed])
