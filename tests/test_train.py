"""The command line: what it asks for is what the notebooks run."""

import pytest

from alignlib import config, train


def test_reinforce_variants_are_the_notebooks_configs():
    profile = config.get_profile("cpu")
    name, cfg = train.reinforce_config(profile, train.parse(["reinforce"]))
    assert name == "reinforce_ema" and cfg == profile.reinforce
    name, cfg = train.reinforce_config(profile, train.parse(["reinforce", "--baseline", "rloo"]))
    # notebook 03's RLOO: 2 replies per prompt, half the prompts, the same number of replies per iteration
    assert name == "reinforce_rloo" and cfg.samples_per_prompt == 2
    assert cfg.prompts_per_iter * 2 == profile.reinforce.prompts_per_iter
    name, cfg = train.reinforce_config(profile, train.parse(["reinforce", "--kl-beta", "0.05", "--name", "x"]))
    assert name == "x" and cfg.kl_beta == 0.05 and cfg.baseline == "ema"
    assert train.reinforce_config(profile, train.parse(["reinforce", "--kl-beta", "0.05"]))[0] == "reinforce_ema_kl"


def test_bad_arguments_are_refused(capsys):
    with pytest.raises(SystemExit):
        train.parse(["rm", "--labels", "3"])
    assert "invalid choice: 3" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train.parse([])
