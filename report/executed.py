"""Tidy an executed notebook before it is committed: paths from the repository root, progress bars at their end.

    python -m report.executed notebooks/02_scalar_reward_model.ipynb ...

`make report` runs this after executing each notebook; `python -m report.learner_path --keep` does the same.

- The package names some folders by their absolute path in what it prints (for example "resuming reward-model
  training at step 50 from /…/checkpoints/cpu/rm_scalar_original_lr_state"); a committed notebook shows the path
  from the repository root instead, the same on every machine. Only that prefix changes.
- A progress bar in Jupyter is a widget, saved with a plain-text copy made when it first appeared ("Loading
  weights: 0%"); a reader without the widgets (GitHub, nbviewer, an editor) sees every bar stuck at zero, as if
  the run had stopped there. The notebook also saves each widget's final state, and the text copy is made again
  from it: "Loading weights: 100%|██████████| 272/272 [00:00<00:00, 9380.14it/s]", as tqdm prints in a terminal.

No other text and no number changes. Idempotent.
"""

from __future__ import annotations

import html
import json
import sys
from pathlib import Path

from report import ROOT

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
BAR_WIDTH = 10


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


def bar_text(label: str, value: float, total: float, right: str) -> str:
    """tqdm's terminal line from its notebook widget's parts: the label ("Loading weights: 100%"), the bar's value
    and total, and the text right of it (" 272/272 [00:00<00:00, 9380.14it/s]"; HTML-escaped, figure spaces)."""
    def plain(s: str) -> str:
        return html.unescape(s).replace("\u2007", " ")

    filled = round(BAR_WIDTH * value / total) if total else 0
    return f"{plain(label)}|{'█' * filled}{' ' * (BAR_WIDTH - filled)}|{plain(right)}"


def final_progress_text(notebook: dict) -> int:
    """Replace the plain-text copy of each progress-bar widget output with the bar's final state, read from the
    widget state the notebook saved; returns how many outputs changed. A widget that is not tqdm's (a box of
    label, progress and label) or whose state was not saved keeps its text."""
    state = notebook.get("metadata", {}).get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    changed = 0
    for cell in notebook["cells"]:
        for out in cell.get("outputs", []):
            view = out.get("data", {}).get(WIDGET_VIEW)
            box = state.get(view["model_id"]) if view else None
            if not box or box.get("model_name") != "HBoxModel":
                continue
            parts = [state.get(str(c).removeprefix("IPY_MODEL_"), {}) for c in box["state"].get("children", [])]
            if [p.get("model_name") for p in parts] != ["HTMLModel", "FloatProgressModel", "HTMLModel"]:
                continue
            label, bar, right = (p["state"] for p in parts)
            text = bar_text(label.get("value", ""), bar.get("value", 0.0), bar.get("max", 0.0), right.get("value", ""))
            if out["data"].get("text/plain") not in (text, [text]):
                out["data"]["text/plain"], changed = text, changed + 1
    return changed


def tidy(notebook: dict, root: str) -> tuple[int, int]:
    """Both steps on `notebook` in place; returns how many outputs each changed (paths, progress bars)."""
    return relativize(notebook, root), final_progress_text(notebook)


def main(paths: list[str]) -> None:
    for path in map(Path, paths):
        notebook = json.loads(path.read_text())
        paths_changed, bars_changed = tidy(notebook, str(ROOT))
        if paths_changed or bars_changed:
            path.write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n")
            print(f"{path}: {paths_changed} output(s) now name paths from the repository root, "
                  f"{bars_changed} progress bar(s) show their end")


if __name__ == "__main__":
    main(sys.argv[1:])
