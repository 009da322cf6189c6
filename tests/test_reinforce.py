import numpy as np
import pytest
import torch

from alignlib import config, losses, machine, reinforce_loop


def test_kl_penalty_by_hand():
    r = torch.tensor([1.0, 0.0])
    logp = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -0.5, -0.5]])
    ref = torch.tensor([[-1.5, -2.0, -9.0], [-1.0, -1.0, -1.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    shaped, kl = losses.kl_penalized_rewards(r, logp, ref, mask, beta=0.1)
    assert kl.tolist() == pytest.approx([0.5, 1.5])  # the masked third token of row 0 is ignored
    assert shaped.tolist() == pytest.approx([1.0 - 0.05, 0.0 - 0.15])


def test_reinforce_loss_gradient_is_minus_advantage_over_batch():
    seq_logp = torch.tensor([-3.0, -5.0], requires_grad=True)
    adv = torch.tensor([2.0, -1.0])
    loss = losses.reinforce_loss(seq_logp, adv)
    loss.backward()
    assert loss.item() == pytest.approx(-(2 * -3 + -1 * -5) / 2)
    assert seq_logp.grad.tolist() == [-1.0, 0.5]


def toy_reward(prompts, texts):
    """Rewards replies for containing the letter 'e' (any deterministic function of the text)."""
    return torch.tensor([t.count("e") / 10 for t in texts], dtype=torch.float32)


PROMPTS = [[{"role": "user", "content": f"Say something about {w}"}] for w in ("cats", "dogs", "rain", "tea")]


def run(tiny_policy_factory, tokenizer, **changes):
    cfg = config.with_overrides(config.get_profile("smoke").reinforce, iterations=2, prompts_per_iter=2,
                                max_new_tokens=5, lr=1e-3, **changes)
    policy = tiny_policy_factory()
    ref = tiny_policy_factory() if cfg.kl_beta > 0 or changes.get("kl_log_every") else None
    return reinforce_loop.train_reinforce(policy, tokenizer, toy_reward, PROMPTS, cfg, ref_policy=ref, progress=False)


@pytest.fixture
def policy_factory(tokenizer):
    from transformers import LlamaForCausalLM

    from conftest import tiny_config

    def make():
        torch.manual_seed(0)
        return LlamaForCausalLM(tiny_config(tokenizer)).eval()

    return make


def strip_times(h):
    return {k: v for k, v in h.items() if not k.startswith("time/")}


@pytest.mark.parametrize("changes", [{}, {"baseline": "rloo", "samples_per_prompt": 2}, {"kl_beta": 0.1}])
def test_loop_is_reproducible_and_logs_everything(policy_factory, tokenizer, changes):
    h1, h2 = run(policy_factory, tokenizer, **changes), run(policy_factory, tokenizer, **changes)
    assert strip_times(h1) == strip_times(h2)
    assert h1["step"] == [1, 2]
    assert set(h1) == set(reinforce_loop.HISTORY_KEYS)
    for key in ("train/loss", "reward/mean", "advantage/baseline", "advantage/mean", "advantage/sq_mean", "advantage/std",
                "response/length", "response/ended_frac", "policy/entropy", "optim/lr", "optim/grad_norm", "time/step"):
        assert len(h1[key]) == 2 and all(np.isfinite(h1[key]))
    if changes.get("kl_beta"):
        assert all(v is not None for v in h1["kl/to_sft"])
        assert h1["kl/to_sft"][0] == pytest.approx(0.0, abs=1e-4)  # identical policies before the first step


def test_different_seed_gives_different_samples(policy_factory, tokenizer):
    a, b = run(policy_factory, tokenizer), run(policy_factory, tokenizer, seed=5)
    assert a["response/length"] != b["response/length"] or a["reward/mean"] != b["reward/mean"]


def test_loop_refuses_inconsistent_settings(policy_factory, tokenizer):
    with pytest.raises(ValueError, match="RLOO needs samples_per_prompt >= 2"):
        run(policy_factory, tokenizer, baseline="rloo", samples_per_prompt=1)
    with pytest.raises(ValueError, match="ref_policy"):
        reinforce_loop.train_reinforce(policy_factory(), tokenizer, toy_reward, PROMPTS,
                                  config.with_overrides(config.get_profile("smoke").reinforce, kl_beta=0.1),
                                  progress=False)
    odd = config.with_overrides(config.get_profile("smoke").reinforce, prompts_per_iter=3)
    reinforce_loop.check_settings(odd, None)  # one process takes all 3 prompts
    with pytest.raises(ValueError, match="prompts_per_iter=3 does not split evenly over 2 processes"):
        reinforce_loop.check_settings(odd, None, processes=2)
    with pytest.raises(ValueError, match="unknown baseline 'mean'; use one of 'ema', 'rloo', 'none'"):
        reinforce_loop.check_settings(config.with_overrides(odd, baseline="mean"), None)
    reinforce_loop.check_settings(config.without_baseline(odd), None)


def test_non_finite_reward_stops_the_run_and_names_it(policy_factory, tokenizer):
    cfg = config.with_overrides(config.get_profile("smoke").reinforce, iterations=2, prompts_per_iter=2, max_new_tokens=3)
    nan_reward = lambda prompts, texts: torch.full((len(texts),), float("nan"))
    with pytest.raises(FloatingPointError, match="non-finite reward at iteration 0"):
        reinforce_loop.train_reinforce(policy_factory(), tokenizer, nan_reward, PROMPTS, cfg, progress=False)


def test_sampled_reward_mode_is_reproducible(policy_factory, tokenizer):
    """r ~ p draws from torch's global generator, which the run seeds once at its top: the same seed gives the
    same run (sampling the replies draws from a generator of its own and does not disturb it)."""
    def sampled_reward(prompts, texts):
        return torch.multinomial(torch.full((len(texts), 10), 0.1), 1)[:, 0].float() + 1

    cfg = config.with_overrides(config.get_profile("smoke").reinforce, iterations=2, prompts_per_iter=2,
                                max_new_tokens=5, lr=1e-3)

    def seeded_run(cfg):
        policy = policy_factory()
        machine.seed_everything(cfg.seed)
        return reinforce_loop.train_reinforce(policy, tokenizer, sampled_reward, PROMPTS, cfg, progress=False)

    h1, h2 = seeded_run(cfg), seeded_run(cfg)
    assert strip_times(h1) == strip_times(h2)
    h3 = seeded_run(config.with_overrides(cfg, seed=3))
    assert h3["reward/mean"] != h1["reward/mean"]


def test_summarize_history_by_hand():
    history = {"step": [1, 2, 3], "time/step": [1.0, 2.0, 6.0], "advantage/var": [0.5, 1.5, 1.0],
               "advantage/sq_mean": [1.0, 2.0, 3.0], "advantage/mean": [0.0, 0.3, -0.6],
               "optim/grad_norm": [0.1, None, 0.2], "reward/mean": [1.0, 2.0, 4.0],
               "time/generate": [0.5, 1.0, 3.0], "time/score": [0.1, 0.2, 0.3], "time/backward": [0.4, 0.8, 2.7]}
    s = reinforce_loop.summarize_history(history, last=2)
    assert s == pytest.approx({"iterations": 3, "sec_per_iter": 3.0, "advantage_var": 1.0, "advantage_sq_mean": 2.0,
                               "advantage_mean": -0.1, "skipped_steps": 1, "train_reward_first": 1.5,
                               "train_reward_last": 3.0, "sec_generate_per_iter": 1.5, "sec_score_per_iter": 0.2,
                               "sec_backward_per_iter": 1.3})
    long = {k: list(range(12)) for k in history}  # the default: the first and last 10 iterations
    long["optim/grad_norm"] = [1.0] * 12
    s = reinforce_loop.summarize_history(long)
    assert s["train_reward_first"] == 4.5 and s["train_reward_last"] == 6.5


@pytest.mark.parametrize("n_prompts", [5, 6, 7])
def test_prompt_stream_deals_whole_batches_each_pass(n_prompts):
    stream = reinforce_loop.prompt_stream(list(range(n_prompts)), 3, seed=0)
    per_pass = n_prompts // 3  # the remainder of a pass is left out, never dealt as a short batch
    for _ in range(3):
        batches = [next(stream) for _ in range(per_pass)]
        dealt = [p for b in batches for p in b]
        assert all(len(b) == 3 for b in batches) and len(set(dealt)) == len(dealt) == 3 * per_pass


def test_prompt_stream_is_seeded():
    def first_batches(seed):
        stream = reinforce_loop.prompt_stream(list(range(12)), 4, seed)
        return [next(stream) for _ in range(6)]

    assert first_batches(0) == first_batches(0) and first_batches(0) != first_batches(1)


def test_prompt_stream_refuses_a_batch_larger_than_the_pool_instead_of_waiting_forever():
    with pytest.raises(ValueError, match="batches of 8 prompts cannot be drawn from 3"):
        next(reinforce_loop.prompt_stream(list(range(3)), 8, seed=0))
