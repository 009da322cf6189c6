"""Statistics for honest comparisons: bootstrap intervals, pairwise accuracy."""

from __future__ import annotations

import numpy as np


def bootstrap_ci(values, n_boot: int = 10_000, seed: int = 0, level: float = 0.95) -> list[float]:
    """Percentile bootstrap interval of the mean of `values`.

    Args:
        values: (n,) per-example numbers (e.g. 1/0 correctness, or paired differences).
    Returns:
        [lo, hi] such that the middle `level` of the resampled means lies inside.
    """
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise ValueError("bootstrap_ci needs at least one value")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return [float(lo), float(hi)]


def length_analysis(len_chosen, len_rejected, r_chosen, r_rejected) -> dict:
    """How much of a reward model's preference follows reply length.

    Args:
        len_chosen, len_rejected: (n,) reply lengths in tokens.
        r_chosen, r_rejected: (n,) rewards.
    Returns:
        Pearson correlation of reward with length (both replies pooled), how often the RM
        prefers the longer reply, the accuracy of "the longer reply wins" (a length-only
        baseline, ties count half) and the RM's accuracy on the pairs where the chosen reply
        is the shorter one.
    """
    lc, lr = np.asarray(len_chosen, float), np.asarray(len_rejected, float)
    rc, rr = np.asarray(r_chosen, float), np.asarray(r_rejected, float)
    lengths, rewards = np.concatenate([lc, lr]), np.concatenate([rc, rr])
    differ = lc != lr
    rm_prefers_longer = ((rc > rr) == (lc > lr))[differ]
    shorter_chosen = lc < lr
    return {
        "length_reward_corr": float(np.corrcoef(lengths, rewards)[0, 1]),
        "rm_prefers_longer": float(rm_prefers_longer.mean()),
        "length_baseline_accuracy": float(((lc > lr) + 0.5 * (lc == lr)).mean()),
        "accuracy_when_chosen_shorter": float((rc > rr)[shorter_chosen].mean()) if shorter_chosen.any() else float("nan"),
        "n_chosen_shorter": int(shorter_chosen.sum()),
    }


# ------------------------------------------------------------- policy comparison (SFT vs RL)


def distinct_n(token_lists, n: int = 2) -> float:
    """Corpus-level distinct-n: unique n-grams / all n-grams over every reply (1.0 = no reuse)."""
    grams = [tuple(t[i:i + n]) for t in token_lists for i in range(len(t) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def repetition_rate(token_lists, n: int = 4) -> float:
    """Mean over replies of the share of n-grams that already occurred earlier in the same reply."""
    rates = []
    for t in token_lists:
        grams = [tuple(t[i:i + n]) for i in range(len(t) - n + 1)]
        if grams:
            rates.append(1 - len(set(grams)) / len(grams))
    return float(np.mean(rates)) if rates else 0.0


def generate_for_eval(policy, tokenizer, prompts, cfg, seed: int = 1234) -> dict:
    """Replies of `policy` to every prompt with the profile's decoding and a fixed seed per batch,
    so that two policies are compared on the same prompts and the same random stream."""
    import torch

    from . import rollout

    texts, tokens, ended = [], [], []
    for b, start in enumerate(range(0, len(prompts), cfg.eval_batch_size)):
        roll = rollout.sample(policy, tokenizer, prompts[start:start + cfg.eval_batch_size], cfg.max_new_tokens,
                              cfg.top_p, cfg.temperature, seed=seed + b, max_prompt_tokens=cfg.max_prompt_tokens,
                              amp=cfg.amp)
        reply = roll.input_ids[:, -roll.resp_len:]
        texts += roll.texts
        tokens += [r[m.bool()].tolist() for r, m in zip(reply, roll.resp_mask)]
        ended += roll.ended.tolist()
    return {"texts": texts, "tokens": tokens, "ended": ended}


def paired_reward_comparison(rewards_sft, rewards_rl, seed: int = 0) -> dict:
    """Mean rewards, the paired difference and the win-rate of RL over SFT, each with a 95% interval.

    Args:
        rewards_sft, rewards_rl: (n,) rewards of each policy's reply to prompt i.
    Returns:
        n_eval_prompts, reward_sft_mean, reward_rl_mean, reward_delta_mean, reward_delta_ci95,
        win_rate (ties count half), win_rate_ci95 and reward_delta_sd_units: the mean difference
        in standard deviations of the SFT rewards, comparable across judges on different scales
        (None when the SFT rewards are all equal).
    """
    r0, r1 = np.asarray(rewards_sft, float), np.asarray(rewards_rl, float)
    if r0.shape != r1.shape or r0.ndim != 1:
        raise ValueError(f"paired rewards need two (n,) arrays, got {r0.shape} and {r1.shape}")
    diff = r1 - r0
    wins = (diff > 0) + 0.5 * (diff == 0)
    sd = r0.std()
    return {
        "n_eval_prompts": int(r0.size),
        "reward_sft_mean": float(r0.mean()), "reward_rl_mean": float(r1.mean()),
        "reward_delta_mean": float(diff.mean()), "reward_delta_ci95": bootstrap_ci(diff, seed=seed),
        "reward_delta_sd_units": float(diff.mean() / sd) if sd > 0 else None,
        "win_rate": float(wins.mean()), "win_rate_ci95": bootstrap_ci(wins, seed=seed),
    }


def cross_judge(runs: dict, judges: dict, prompts: list) -> dict:
    """Score every run's held-out SFT and RL replies with every judge.

    A policy trained against one reward model can learn that model's quirks; a judge it was
    not trained on tells whether the gain carries over.

    Args:
        runs: run name -> REINFORCE run record; its "samples" hold, per evaluation prompt, the
            SFT reply "sft" and the trained policy's reply "rl".
        judges: judge name -> scorer (prompts, texts) -> (n,) rewards.
        prompts: the evaluation conversations (chat-message lists) the samples answer, in order.
    Returns:
        {run: {judge: paired_reward_comparison(...)}}. Identical SFT reply sets are scored once.
    Raises:
        ValueError: if a run's samples do not answer `prompts` (other prompts, other order).
    """
    expected = [p[-1]["content"] for p in prompts]
    cache, out = {}, {}
    for run, record in runs.items():
        samples = record["samples"]
        if [s["prompt"] for s in samples] != expected:
            raise ValueError(f"run {run!r} was evaluated on other prompts than the ones given "
                             "(re-run its notebook, or rebuild the evaluation prompts with the same profile)")
        sft, rl = [s["sft"] for s in samples], [s["rl"] for s in samples]
        out[run] = {}
        for judge, scorer in judges.items():
            key = (judge, tuple(sft))
            if key not in cache:
                cache[key] = np.asarray(scorer(prompts, sft), float)
            out[run][judge] = paired_reward_comparison(cache[key], np.asarray(scorer(prompts, rl), float))
    return out


def compare_policies(rewards_sft, rewards_rl, gen_sft: dict, gen_rl: dict, seed: int = 0) -> dict:
    """Paired comparison of two policies' replies to the same prompts.

    Args:
        rewards_sft, rewards_rl: (n,) rewards of each policy's reply to prompt i.
        gen_sft, gen_rl: outputs of `generate_for_eval` (reply tokens, end-of-turn flags).
    Returns:
        mean rewards, the paired difference with a bootstrap 95% interval, the win-rate of RL
        over SFT (ties count half) with its interval, reply length, distinct-2, repetition rate
        and the share of replies that closed their turn.
    """
    return {
        **paired_reward_comparison(rewards_sft, rewards_rl, seed),
        "length_sft": float(np.mean([len(t) for t in gen_sft["tokens"]])),
        "length_rl": float(np.mean([len(t) for t in gen_rl["tokens"]])),
        "distinct2_sft": distinct_n(gen_sft["tokens"], 2), "distinct2_rl": distinct_n(gen_rl["tokens"], 2),
        "repetition_sft": repetition_rate(gen_sft["tokens"]), "repetition_rl": repetition_rate(gen_rl["tokens"]),
        "ended_frac_sft": float(np.mean(gen_sft["ended"])), "ended_frac_rl": float(np.mean(gen_rl["ended"])),
    }


def kl_to_reference(policy, ref_policy, tokenizer, prompts, replies_tokens, cfg) -> float:
    """Mean over prompts of sum_t (log pi - log pi_ref) on the policy's own replies (nats per reply)."""
    import torch

    from . import rollout
    from .data import left_pad
    from .precision import autocast

    dev = next(policy.parameters()).device
    total = []
    for start in range(0, len(prompts), cfg.eval_batch_size):
        ps = prompts[start:start + cfg.eval_batch_size]
        reps = replies_tokens[start:start + cfg.eval_batch_size]
        p_ids, p_mask = left_pad(rollout.encode_prompts(tokenizer, ps), tokenizer.pad_token_id)
        width = max(1, max(len(r) for r in reps))
        r_ids = torch.full((len(reps), width), tokenizer.pad_token_id, dtype=torch.long)
        r_mask = torch.zeros((len(reps), width))
        for i, r in enumerate(reps):
            r_ids[i, :len(r)] = torch.tensor(r, dtype=torch.long)
            r_mask[i, :len(r)] = 1
        roll = rollout.Rollout(ps, torch.cat([p_ids, r_ids], 1), torch.cat([p_mask, r_mask.long()], 1),
                               r_mask, torch.ones(len(ps), dtype=torch.bool), [])
        with torch.inference_mode(), autocast(cfg.amp, dev):
            lp = rollout.token_logprobs(rollout.rollout_logits(policy, roll), r_ids.to(dev))
            lq = rollout.token_logprobs(rollout.rollout_logits(ref_policy, roll), r_ids.to(dev))
        total += rollout.masked_sum(lp - lq, r_mask.to(dev)).float().cpu().tolist()
    return float(np.mean(total))


def distribution_report(logits_chosen, logits_rejected) -> dict:
    """How a distributional reward model uses its scores 1..n on a set of pairs.

    Args:
        logits_chosen, logits_rejected: (pairs, n) head outputs.
    Returns:
        spread of E[p], mean Var[p], how many score classes are ever the most likely one (and
        the share of the most used), the entropy of the average distribution (log n = uniform use),
        and mean Var[p] on pairs ranked right vs wrong.
    """
    lc, lr = np.asarray(logits_chosen, float), np.asarray(logits_rejected, float)
    logits = np.concatenate([lc, lr])
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    scores = np.arange(1, p.shape[1] + 1)
    mean = p @ scores
    var = p @ scores**2 - mean**2
    n = len(lc)
    right = mean[:n] > mean[n:]
    pair_var = (var[:n] + var[n:]) / 2
    top = np.bincount(p.argmax(-1), minlength=p.shape[1]) / len(p)
    avg = p.mean(0)
    return {
        "expected_score_mean": float(mean.mean()), "expected_score_std": float(mean.std()),
        "expected_score_min": float(mean.min()), "expected_score_max": float(mean.max()),
        "var_mean": float(var.mean()),
        "classes_used_as_argmax": int((top > 0).sum()), "top_class_share": float(top.max()),
        "avg_distribution_entropy": float(-(avg * np.log(avg + 1e-12)).sum()), "uniform_entropy": float(np.log(p.shape[1])),
        "var_when_right": float(pair_var[right].mean()) if right.any() else float("nan"),
        "var_when_wrong": float(pair_var[~right].mean()) if (~right).any() else float("nan"),
    }
