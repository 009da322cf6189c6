"""The command line: what it asks for is what the notebooks run."""

import pytest

from alignlib import cli, config


def test_reinforce_variants_are_the_notebooks_configs():
    profile = config.get_profile("cpu")
    name, cfg = cli.reinforce_config(profile, cli.parse(["reinforce"]))
    assert name == "reinforce_ema" and cfg == profile.reinforce
    name, cfg = cli.reinforce_config(profile, cli.parse(["reinforce", "--baseline", "rloo"]))
    assert name == "reinforce_rloo" and cfg == config.rloo(profile.reinforce)  # notebook 03's RLOO
    name, cfg = cli.reinforce_config(profile, cli.parse(["reinforce", "--kl-beta", "0.05", "--name", "x"]))
    assert name == "x" and cfg == config.with_kl(profile.reinforce, 0.05)
    assert cli.reinforce_config(profile, cli.parse(["reinforce", "--kl-beta", "0.05"]))[0] == "reinforce_ema_kl"


def test_the_rloo_variant_samples_as_many_replies_per_iteration_as_ema():
    ema = config.get_profile("cpu").reinforce
    rloo = config.rloo(ema)
    assert rloo.baseline == "rloo" and rloo.samples_per_prompt == 2
    assert rloo.prompts_per_iter * rloo.samples_per_prompt == ema.prompts_per_iter * ema.samples_per_prompt
    assert config.with_kl(ema).kl_beta == config.KL_BETA > 0 and config.with_kl(ema).baseline == "ema"


def test_bad_arguments_are_refused(capsys):
    with pytest.raises(SystemExit):
        cli.parse(["rm", "--labels", "3"])
    assert "invalid choice: 3" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.parse([])


def test_help_answers_without_importing_torch():
    """--help and argument errors come before the heavy imports (torch alone takes seconds)."""
    import subprocess
    import sys
    import time

    probe = ("import sys\nfrom alignlib import cli\ntry:\n    cli.parse(['--help'])\nexcept SystemExit:\n    pass\n"
             "print('torch' in sys.modules, 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert out.stdout.split()[-2:] == ["False", "False"], out.stderr
    start = time.perf_counter()
    helped = subprocess.run([sys.executable, "-m", "alignlib", "--help"], capture_output=True, text=True, timeout=60)
    elapsed = time.perf_counter() - start
    assert helped.returncode == 0 and "--profile" in subprocess.run(
        [sys.executable, "-m", "alignlib", "rm", "--help"], capture_output=True, text=True, timeout=60).stdout
    assert elapsed < 5, f"python -m alignlib --help took {elapsed:.1f} s"  # about 0.05 s; 15 s importing torch


def test_the_profile_option_picks_the_profile(monkeypatch):
    from alignlib import data, models, runs

    assert set(cli.PROFILES) == set(config.PROFILES)
    asked, trained = [], []
    real_get_profile = config.get_profile
    monkeypatch.setattr(config, "get_profile", lambda name=None: asked.append(name) or real_get_profile(name))
    monkeypatch.setattr(models, "load_tokenizer", lambda: "tokenizer")
    monkeypatch.setattr(data, "load_preference_data", lambda cfg: "prefs")
    monkeypatch.setattr(runs, "reward_model_run", lambda name, profile, *args, **kw: trained.append(profile) or (None,))
    monkeypatch.setenv(config.PROFILE_ENV, "cpu")
    assert cli.main(["rm", "--profile", "smoke"]) is None  # None: as another process than the main one
    assert asked == ["smoke"] and trained[-1].name == "smoke"
    cli.main(["rm"])  # without it: $ALIGNLIB_PROFILE
    assert asked[-1] is None and trained[-1].name == "cpu"
