"""The Colab requirements pin what requirements.txt pins, and never torch (Colab's CUDA build stays)."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def pins(name: str) -> dict[str, str]:
    lines = [line.split("#")[0].strip() for line in (ROOT / name).read_text().splitlines()]
    return {line.split("==")[0]: line for line in lines if line}


def test_colab_requirements_are_a_subset_without_torch():
    full, colab = pins("requirements.txt"), pins("requirements-colab.txt")
    assert "torch" not in colab and "jupyter" not in colab
    assert all(full.get(name) == line for name, line in colab.items()), "a Colab pin differs from requirements.txt"
