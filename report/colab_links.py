"""Point every Colab badge and clone cell at the repository named in pyproject.toml.

    python -m report.colab_links          # rewrite the notebooks and the README from pyproject.toml
    python -m report.colab_links --check  # exit 1 if a link disagrees with pyproject.toml (tests run this)

The one place the address lives is `[project.urls] Repository` in pyproject.toml. A fork sets its
own address there and runs `make colab-links`: the badges (README and the top of each notebook)
and the `git clone` in each notebook's first code cell follow.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from report import ROOT

BRANCH = "main"
BADGE = re.compile(r"https://colab\.research\.google\.com/github/[\w.-]+/[\w.-]+/blob/[\w.-]+/notebooks/")
CLONE = re.compile(r"https://github\.com/[\w.-]+/[\w.-]+\.git")


def repository() -> str:
    """owner/name of the GitHub repository in pyproject.toml's [project.urls] Repository."""
    line = re.search(r'^Repository\s*=\s*"([^"]*)"', (ROOT / "pyproject.toml").read_text(), re.M)
    url = line.group(1) if line else ""
    match = re.fullmatch(r"https://github\.com/([\w.-]+/[\w.-]+?)(?:\.git)?/?", url)
    if not match:
        raise SystemExit(f"pyproject.toml: [project.urls] Repository must be https://github.com/OWNER/NAME, got {url!r}")
    return match.group(1)


def relink(text: str, repo: str) -> str:
    text = BADGE.sub(f"https://colab.research.google.com/github/{repo}/blob/{BRANCH}/notebooks/", text)
    return CLONE.sub(f"https://github.com/{repo}.git", text)


def files() -> list[Path]:
    return sorted((ROOT / "notebooks").glob("0*.ipynb")) + [ROOT / "README.md"]


def main(argv: list[str]) -> int:
    repo, stale = repository(), []
    for path in files():
        text = path.read_text()
        if path.suffix == ".ipynb":  # rewrite cell sources only, keeping the file's JSON layout
            nb = json.loads(text)
            for cell in nb["cells"]:
                cell["source"] = relink("".join(cell["source"]), repo).splitlines(keepends=True)
            new = json.dumps(nb, indent=1, ensure_ascii=False) + "\n"
        else:
            new = relink(text, repo)
        if new != text:
            stale.append(path.relative_to(ROOT))
            if "--check" not in argv:
                path.write_text(new)
    if "--check" in argv and stale:
        print(f"links not pointing at {repo} (run `make colab-links`):", *stale, sep="\n  ")
        return 1
    print(f"Colab links point at github.com/{repo}" + (f" (rewrote {len(stale)} files)" if stale else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
