import dataclasses

import pytest

from alignlib import config


def test_full_profile_is_the_original_setup():
    full = config.get_profile("full")
    rm, rl, prob = full.rm_scalar, full.reinforce, full.rm_prob
    assert (full.data.max_length, full.data.n_validation, full.data.max_train_pairs) == (512, 373, None)
    assert (rm.num_labels, rm.epochs, rm.lr, rm.loss, rm.amp) == (1, 1, 5e-5, "bradley_terry", "none")
    assert (rm.lora_r, rm.lora_alpha, rm.lora_dropout, rm.margin, rm.center_coef) == (16, 32, 0.05, 0.0, 0.0)
    assert (prob.num_labels, prob.epochs, prob.lr, prob.amp) == (10, 3, 5e-5, "fp16")
    assert (rl.iterations, rl.max_new_tokens, rl.lr, rl.max_grad_norm, rl.top_p) == (300, 128, 1e-5, 1.0, 0.9)
    assert (rl.baseline, rl.ema_alpha, rl.kl_beta) == ("ema", 0.9, 0.0)


def test_profile_from_environment(monkeypatch):
    monkeypatch.setenv(config.PROFILE_ENV, "smoke")
    assert config.get_profile().name == "smoke"
    assert config.get_profile("cpu").name == "cpu"  # an explicit name wins


def test_default_profile_without_cuda(monkeypatch):
    monkeypatch.delenv(config.PROFILE_ENV, raising=False)
    monkeypatch.setattr(config.torch.cuda, "is_available", lambda: False)
    assert config.get_profile().name == "cpu"
    monkeypatch.setattr(config.torch.cuda, "is_available", lambda: True)
    assert config.get_profile().name == "full"


def test_unknown_profile_lists_the_valid_ones(monkeypatch):
    monkeypatch.setenv(config.PROFILE_ENV, "gpu-big")
    with pytest.raises(config.UnknownProfileError) as err:
        config.get_profile()
    message = str(err.value)
    assert "'gpu-big'" in message and "cpu, full, smoke" in message and "ALIGNLIB_PROFILE" in message


def test_profiles_are_typed_and_frozen():
    cpu = config.get_profile("cpu")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cpu.rm_scalar.lr = 1.0
    assert config.with_overrides(cpu.rm_scalar, lr=1.0).lr == 1.0 and cpu.rm_scalar.lr != 1.0


@pytest.mark.parametrize("name", ["full", "cpu", "smoke"])
def test_the_reward_model_reads_the_longest_prompt_and_reply_whole(name):
    """The held-out replies may take eval_budget tokens; scored at the training length they would be cut from the
    left, and the reward model would judge the reply's end without its prompt."""
    profile = config.get_profile(name)
    cfg = profile.reinforce
    assert config.scoring_length(profile) >= cfg.max_prompt_tokens + cfg.eval_budget + 1
    assert config.scoring_length(profile) >= profile.data.max_length
    assert cfg.eval_budget >= cfg.max_new_tokens
