"""The Colab badges and clone cells follow the one repository address in pyproject.toml."""

from report import colab_links


def test_every_link_points_at_the_repository_of_pyproject():
    assert colab_links.main(["--check"]) == 0


def test_relink_rewrites_badges_and_clones_of_another_address():
    text = ("[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
            "(https://colab.research.google.com/github/old-owner/old.repo/blob/dev/notebooks/03_reinforce.ipynb)\n"
            "!git clone -q --depth 1 https://github.com/old-owner/old.repo.git course\n")
    new = colab_links.relink(text, "me/fork")
    assert "https://colab.research.google.com/github/me/fork/blob/main/notebooks/03_reinforce.ipynb" in new
    assert "https://github.com/me/fork.git course" in new and "old-owner" not in new
