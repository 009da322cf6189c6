"""Write the repository's own absolute path as a relative one in executed notebooks' outputs.

    python -m report.relative_paths notebooks/02_scalar_reward_model.ipynb ...

`make report` runs this after executing each notebook. The package names some folders by their
absolute path in what it prints (for example "resuming reward-model training at step 50 from
/…/checkpoints/cpu/rm_scalar_original_lr_state"); a committed notebook should show the path from
the repository root instead, the same on every machine. Only that prefix changes: no other text,
no number. Idempotent.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from report import ROOT


def relative(text, root: str):
    """`text` (a string or nbformat's list of lines) with every "<root>/" removed."""
    prefix = root.rstrip("/") + "/"
    if isinstance(text, list):
        return [line.replace(prefix, "") for line in text]
    return text.replace(prefix, "")


def relativize(notebook: dict, root: str) -> int:
    """Rewrite `root` out of the text outputs of `notebook` in place; returns how many outputs changed."""
    changed = 0
    for cell in notebook["cells"]:
        for out in cell.get("outputs", []):
            fields = [(out, "text")] if "text" in out else []
            fields += [(out["data"], kind) for kind in out.get("data", {}) if kind.startswith("text/")]
            for holder, key in fields:
                new = relative(holder[key], root)
                if new != holder[key]:
                    holder[key], changed = new, changed + 1
    return changed


def main(paths: list[str]) -> None:
    for path in map(Path, paths):
        notebook = json.loads(path.read_text())
        changed = relativize(notebook, str(ROOT))
        if changed:
            path.write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n")
            print(f"{path}: {changed} output(s) now name paths from the repository root")


if __name__ == "__main__":
    main(sys.argv[1:])
