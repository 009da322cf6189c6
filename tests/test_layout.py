"""The package's shape: layers without import cycles, short functions, nothing done at import time."""

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "alignlib"
NOTEBOOKS = sorted((PACKAGE.parent / "notebooks").glob("*.ipynb"))
LOOPS = {"train_reinforce", "train_reward_model"}  # each one function read top to bottom, on purpose


def internal_imports() -> dict[str, set[str]]:
    """module -> the alignlib modules it imports (relative imports, at any depth in the file)."""
    graph = {}
    for path in PACKAGE.glob("*.py"):
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                deps |= {node.module.split(".")[0]} if node.module else {a.name for a in node.names}
        graph[path.stem] = deps - {path.stem}
    return graph


def test_no_import_cycle_inside_the_package():
    graph, state, cycles = internal_imports(), {}, []

    def visit(module, stack):
        state[module] = "open"
        for dep in sorted(graph.get(module, ())):
            if state.get(dep) == "open":
                cycles.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, stack + [dep])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, f"import cycles: {cycles}"


def test_the_math_imports_no_model_code():
    """losses, baselines, logprobs, stats and packing are pure functions of tensors and arrays."""
    graph = internal_imports()
    for module in ("losses", "baselines", "logprobs", "stats"):
        assert graph[module] == set(), (module, graph[module])
    assert graph["packing"] <= {"data"}


def test_no_function_is_longer_than_60_lines_and_no_loop_longer_than_100():
    long = []
    for path in [*PACKAGE.glob("*.py"), *(PACKAGE.parent / "report").glob("*.py"), *(PACKAGE.parent / "benchmarks").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if node.end_lineno - node.lineno + 1 > (100 if node.name in LOOPS else 60):
                    long.append(f"{path.name}:{node.name} ({node.end_lineno - node.lineno + 1} lines)")
    assert not long, long


def test_no_module_imports_one_of_a_higher_layer_than_its_own():
    """The layers table of docs/architecture.md is what the imports do."""
    layers = {}
    for line in (PACKAGE.parent / "docs" / "architecture.md").read_text().splitlines():
        row = re.match(r"\| (\d)\. [^|]*\| ([^|]*)\|", line)
        if row:
            layers |= dict.fromkeys(re.findall(r"`(\w+)`", row.group(2)), int(row.group(1)))
    upward = [f"{module} (layer {layers[module]}) imports {dep} (layer {layers[dep]})"
              for module, deps in internal_imports().items() if module in layers
              for dep in deps if layers.get(dep, 0) > layers[module]]
    assert layers and not upward, upward


def test_the_architecture_page_names_every_module():
    """docs/architecture.md is the project's own design: it must keep up with the package."""
    page = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    missing = sorted(path.stem for path in PACKAGE.glob("*.py") if f"`{path.stem}`" not in page)
    assert not missing, f"docs/architecture.md does not name {missing}"


def test_importing_the_package_changes_no_global_setting():
    code = ("import matplotlib, torch; threads = torch.get_num_threads(); rc = dict(matplotlib.rcParams); "
            "import alignlib, alignlib.runs, alignlib.plots; "
            "assert torch.get_num_threads() == threads, 'threads'; "
            "assert dict(matplotlib.rcParams) == rc, 'rcParams'")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]


def test_figures_apply_the_house_style_only_while_drawing():
    import matplotlib

    from alignlib import plots

    before = dict(matplotlib.rcParams)
    fig = plots.paired_rewards([0.0, 1.0, 2.0], [0.5, 1.5, 1.0])
    assert fig.dpi == plots.STYLE["figure.dpi"]
    assert dict(matplotlib.rcParams) == before


def test_a_figure_keeps_the_interactive_mode_its_drawing_switched_on():
    """Jupyter's inline backend switches interactive mode on with a notebook's first figure: a style context that
    restored it would hide every later figure."""
    import matplotlib.pyplot as plt

    from alignlib import plots

    @plots.styled
    def first_figure():
        plt.ion()  # what the inline backend does
        return plt.figure()

    was = plt.isinteractive()
    try:
        plt.ioff()
        plt.close(first_figure())
        assert plt.isinteractive()
    finally:
        plt.interactive(was)


def test_every_notebook_is_valid_nbformat_with_cell_ids():
    """Cells added by a script need ids too (nbformat 4.5), or Jupyter rewrites every notebook on save."""
    import nbformat

    for path in NOTEBOOKS:
        raw = json.loads(path.read_text())
        assert all("id" in cell for cell in raw["cells"]), f"{path.name}: a cell without an id"
        nbformat.validate(nbformat.reads(path.read_text(), as_version=4))


def output_texts(notebook: Path):
    """(cell index, output kind, text) of every text a committed notebook shows: streams, text results, errors."""
    for i, cell in enumerate(json.loads(notebook.read_text())["cells"]):
        for out in cell.get("outputs", []):
            if "text" in out:
                yield i, out.get("name", "stream"), "".join(out["text"])
            for kind, value in out.get("data", {}).items():
                if kind.startswith("text/"):
                    yield i, kind, "".join(value) if isinstance(value, list) else value
            if out.get("output_type") == "error":
                yield i, "error", f"{out.get('ename')}: {out.get('evalue')}"


def test_committed_notebook_outputs_show_no_build_machine_path_and_no_library_warning():
    """What a reader of the committed (cpu) notebooks sees: paths relative to the repository, no deprecation
    noise of a library (silenced where the course knows it is harmless: models.py)."""
    found = []
    for notebook in NOTEBOOKS:
        for i, kind, text in output_texts(notebook):
            found += [f"{notebook.name} cell {i} ({kind}): {mark!r}" for mark in
                      (str(PACKAGE.parent), "site-packages", "/home/", "/root/", "/content/", "Warning:")
                      if mark in text]
    assert not found, "\n".join(found)


def test_every_figure_of_a_committed_notebook_is_shown():
    """Each cell that draws shows its figure (in the committed cpu notebooks every branch that draws runs)."""
    hidden = []
    for notebook in NOTEBOOKS:
        cells = [c for c in json.loads(notebook.read_text())["cells"] if c["cell_type"] == "code"]
        sources = ["".join(c["source"]) for c in cells]
        for i, (cell, src) in enumerate(zip(cells, sources)):
            draws = len(re.findall(r"\bplots\.(?!smooth\b)\w+\(", src))
            shown = sum("image/png" in out.get("data", {}) for out in cell.get("outputs", []))
            if draws and not shown:
                hidden.append(f"{notebook.name}, code cell {i}: {draws} figure(s) drawn, none shown")
    assert not hidden, "\n".join(hidden)


def test_relative_paths_rewrites_only_the_repository_prefix_of_text_outputs():
    """`make report` runs `python -m report.executed` after each notebook: the absolute repository path that the
    package prints (a resumed run's checkpoint folder) becomes relative; images, code and other paths stay."""
    from report import executed

    root = "/build/repo"
    notebook = {"cells": [
        {"cell_type": "code", "source": "print('/build/repo/x')", "outputs": [
            {"output_type": "stream", "name": "stdout",
             "text": ["[alignlib] resuming at step 50 from /build/repo/checkpoints/cpu/rm_state\n", "/build/other/y\n"]},
            {"output_type": "execute_result", "data": {"text/plain": "/build/repo/results/cpu/a.json 0.5",
                                                       "image/png": "/build/repo/"}}]},
        {"cell_type": "markdown", "source": "/build/repo/"}]}
    assert executed.relativize(notebook, root + "/") == 2
    out = notebook["cells"][0]["outputs"]
    assert out[0]["text"] == ["[alignlib] resuming at step 50 from checkpoints/cpu/rm_state\n", "/build/other/y\n"]
    assert out[1]["data"] == {"text/plain": "results/cpu/a.json 0.5", "image/png": "/build/repo/"}
    assert notebook["cells"][0]["source"] == "print('/build/repo/x')" and notebook["cells"][1]["source"] == "/build/repo/"
    assert executed.relativize(notebook, root) == 0  # idempotent


def test_a_progress_bar_of_an_executed_notebook_shows_its_end_to_a_reader_without_widgets():
    """A widget's plain-text copy is made when the bar first appears ("0%"); it is made again from the final state
    the notebook saved, as tqdm prints it in a terminal. Other widgets, and bars whose state was not saved, keep it."""
    from report import executed

    def model(name, **state):
        return {"model_name": name, "model_module": "@jupyter-widgets/controls", "state": state}

    def view(model_id, text):
        return {"output_type": "display_data", "metadata": {},
                "data": {executed.WIDGET_VIEW: {"model_id": model_id, "version_major": 2, "version_minor": 0},
                         "text/plain": [text]}}

    state = {"box": model("HBoxModel", children=["IPY_MODEL_l", "IPY_MODEL_p", "IPY_MODEL_r"]),
             "l": model("HTMLModel", value="KL\u2007to\u2007reference:\u2007100%"),
             "p": model("FloatProgressModel", value=128.0, max=128.0),
             "r": model("HTMLModel", value="\u2007128/128\u2007[09:01&lt;00:00,\u2007\u20073.74s/prompt]"),
             "half": model("HBoxModel", children=["IPY_MODEL_l", "IPY_MODEL_q", "IPY_MODEL_r"]),
             "q": model("FloatProgressModel", value=64.0, max=128.0),
             "form": model("VBoxModel", children=["IPY_MODEL_t"]), "t": model("TextareaModel", value="hi")}
    outputs = [view("box", "KL to reference:   0%|          | 0/128 [00:00<?, ?prompt/s]"), view("half", "x"),
               view("form", "interactive(children=(Textarea(value='hi'),))"), view("gone", "Loading weights:   0%")]
    notebook = {"cells": [{"cell_type": "code", "source": "", "outputs": outputs}],
                "metadata": {"widgets": {executed.WIDGET_STATE: {"state": state, "version_major": 2}}}}
    assert executed.final_progress_text(notebook) == 2
    texts = [o["data"]["text/plain"] for o in outputs]
    assert texts[0] == "KL to reference: 100%|██████████| 128/128 [09:01<00:00,  3.74s/prompt]"
    assert texts[1] == "KL to reference: 100%|█████     | 128/128 [09:01<00:00,  3.74s/prompt]"
    assert texts[2:] == [["interactive(children=(Textarea(value='hi'),))"], ["Loading weights:   0%"]]
    assert executed.final_progress_text(notebook) == 0  # idempotent
    assert executed.final_progress_text({"cells": [{"outputs": [view("box", "0%")]}], "metadata": {}}) == 0


def test_the_colab_cell_is_the_same_everywhere_and_safe_to_run_twice(tmp_path, monkeypatch):
    """Run as Colab runs it (IPython's transform of `!` and `%` lines), twice: one clone, one install, an
    absolute working directory (no course/notebooks/course), and the results on Drive via $ALIGNLIB_RESULTS_DIR."""
    import types

    from IPython.core.inputtransformer2 import TransformerManager

    cells = {"".join(next(c for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "code")["source"])
             for nb in NOTEBOOKS}
    assert len(cells) == 1, "the notebooks' Colab cells differ"
    code = TransformerManager().transform_cell(cells.pop()).replace("/content", str(tmp_path))
    calls = []

    class FakeIPython:
        def system(self, command):
            calls.append(("system", command))
            if command.startswith("git clone"):
                (tmp_path / "course" / ".git").mkdir(parents=True)

        def run_line_magic(self, magic, line):
            calls.append((magic, line))

    drive = types.SimpleNamespace(mount=lambda where: calls.append(("mount", where)))
    monkeypatch.setitem(sys.modules, "google", types.ModuleType("google"))
    monkeypatch.setitem(sys.modules, "google.colab", types.SimpleNamespace(drive=drive))
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(os, "environ", {k: v for k, v in os.environ.items() if k != "ALIGNLIB_RESULTS_DIR"})  # a copy:
    for _ in range(2):  # what the cell sets stays out of the other tests' environment
        exec(code, {"get_ipython": FakeIPython})
    assert [c[0] for c in calls].count("system") == 1 and [c[0] for c in calls].count("pip") == 2  # once each
    assert [line for magic, line in calls if magic == "cd"] == [f"{tmp_path}/course/notebooks"] * 2
    assert sys.path.count(f"{tmp_path}/course") == 1
    assert os.environ["ALIGNLIB_RESULTS_DIR"] == f"{tmp_path}/drive/MyDrive/smollm2-rlhf"


def test_the_notebooks_hold_at_least_8_exercises_each_checked_by_a_tested_check():
    """Each cell tagged `exercise` leaves a stub to the learner and calls one check of `alignlib.exercises`."""
    from alignlib import exercises

    checked = []
    for notebook in NOTEBOOKS:
        for cell in json.loads(notebook.read_text())["cells"]:
            if "exercise" in cell.get("metadata", {}).get("tags", []):
                src = "".join(cell["source"])
                names = re.findall(r"exercises\.check_(\w+)\(", src)
                assert len(names) == 1 and names[0] in exercises.EXERCISES, f"{notebook.name}: {src[:80]}"
                assert "raise NotImplementedError" in src, f"{notebook.name}: the exercise {names[0]} has no stub"
                checked.append(names[0])
    assert len(checked) >= 8 and len(set(checked)) == len(checked), checked
