"""Judging runs: a reward model on the validation pairs and the original write-up's checks; a policy's
replies to held-out prompts, SFT vs RL compared pairwise, its KL to the SFT model, and every run re-scored
by every judge.

The statistics are in `stats`; this module runs the models.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from . import precision, rollout, scoring, stats
from .config import EVAL_SEED
from .data import PreferencePair
from .logprobs import masked_sum, token_logprobs
from .stats import distinct_n, gain_by_ending, length_controlled_gain, paired_reward_comparison, repetition_rate


def generate_for_eval(policy, tokenizer, prompts, cfg, seed: int = EVAL_SEED, progress: bool = True) -> dict:
    """Replies of `policy` to every prompt with the profile's decoding and a fixed seed per batch,
    so that two policies are compared on the same prompts and the same random stream (a progress
    bar counts the prompts unless `progress` is False).

    Returns {"texts": [str], "tokens": [[int]] (up to and including the first eos), "ended": [bool]}.
    """
    texts, tokens, ended = [], [], []
    bar = tqdm(total=len(prompts), desc="generating replies", unit="prompt", leave=False, disable=not progress)
    for b, start in enumerate(range(0, len(prompts), cfg.eval_batch_size)):
        roll = rollout.sample(policy, tokenizer, prompts[start:start + cfg.eval_batch_size], cfg.max_new_tokens,
                              cfg.top_p, cfg.temperature, seed=seed + b, max_prompt_tokens=cfg.max_prompt_tokens,
                              amp=cfg.amp)
        texts += roll.texts
        tokens += [r[m.bool()].tolist() for r, m in zip(roll.reply_ids, roll.resp_mask)]
        ended += roll.ended.tolist()
        bar.update(len(roll.texts))
    bar.close()
    return {"texts": texts, "tokens": tokens, "ended": ended}


def kl_to_reference(policy, ref_policy, tokenizer, prompts, replies_tokens, cfg, progress: bool = True) -> float:
    """Mean over prompts of sum_t (log pi - log pi_ref) on the policy's own replies (nats per reply).

    Args:
        replies_tokens: per prompt, the policy's reply tokens (`generate_for_eval`'s "tokens").
        cfg: its `eval_batch_size` and `amp` are used.
        progress: show a progress bar over the prompts.
    """
    dev = next(policy.parameters()).device
    total = []
    bar = tqdm(total=len(prompts), desc="KL to reference", unit="prompt", leave=False, disable=not progress)
    for start in range(0, len(prompts), cfg.eval_batch_size):
        roll = rollout.from_replies(tokenizer, prompts[start:start + cfg.eval_batch_size],
                                    replies_tokens[start:start + cfg.eval_batch_size])
        targets, mask = roll.reply_ids.to(dev), roll.resp_mask.to(dev)
        with torch.inference_mode(), precision.autocast(cfg.amp, dev):
            lp = token_logprobs(rollout.rollout_logits(policy, roll), targets)
            lq = token_logprobs(rollout.rollout_logits(ref_policy, roll), targets)
        total += masked_sum(lp - lq, mask).float().cpu().tolist()
        bar.update(len(roll.prompts))
    bar.close()
    return float(np.mean(total))


def compare_policies(rewards_sft, rewards_rl, gen_sft: dict, gen_rl: dict, seed: int = 0) -> dict:
    """Paired comparison of two policies' replies to the same prompts.

    Args:
        rewards_sft, rewards_rl: (n,) rewards of each policy's reply to prompt i.
        gen_sft, gen_rl: outputs of `generate_for_eval` (reply tokens, end-of-turn flags).
    Returns:
        mean rewards, the paired difference with a bootstrap 95% interval, the win-rate of RL
        over SFT (ties count half) with its interval, reply length, distinct-2, repetition rate
        and the share of replies that closed their turn; the gain at equal length and the share
        of it that length explains (`stats.length_controlled_gain`), and the gain split by
        whether the replies ended or were cut at the cap ("gain_by_ending", `stats.gain_by_ending`).
    """
    len_sft, len_rl = [len(t) for t in gen_sft["tokens"]], [len(t) for t in gen_rl["tokens"]]
    return {
        **paired_reward_comparison(rewards_sft, rewards_rl, seed),
        **length_controlled_gain(rewards_sft, rewards_rl, len_sft, len_rl, seed=seed),
        "gain_by_ending": gain_by_ending(rewards_sft, rewards_rl, gen_sft["ended"], gen_rl["ended"]),
        "length_sft": float(np.mean(len_sft)), "length_rl": float(np.mean(len_rl)),
        "distinct2_sft": distinct_n(gen_sft["tokens"], 2), "distinct2_rl": distinct_n(gen_rl["tokens"], 2),
        "repetition_sft": repetition_rate(gen_sft["tokens"]), "repetition_rl": repetition_rate(gen_rl["tokens"]),
        "ended_frac_sft": float(np.mean(gen_sft["ended"])), "ended_frac_rl": float(np.mean(gen_rl["ended"])),
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



def judged_examples(prompt: list, replies: dict, judges: dict) -> list[dict]:
    """Replies of several policies to one prompt, each scored by every judge (rows for a table).

    Args:
        prompt: one chat-message list.
        replies: policy label -> reply text.
        judges: judge name -> scorer (prompts, texts) -> (n,) rewards.
    """
    labels, texts = list(replies), list(replies.values())
    scores = {judge: np.asarray(scorer([prompt] * len(texts), texts), float) for judge, scorer in judges.items()}
    return [{"policy": label, "reply": text, **{judge: float(s[i]) for judge, s in scores.items()}}
            for i, (label, text) in enumerate(zip(labels, texts))]


# ------------------------------------------------------------------------------ reward models

RLHF = [{"role": "user", "content": "What is RLHF?"}]
RLHF_DEFINITION = ("RLHF, reinforcement learning from human feedback, fine-tunes a language model with reinforcement "
                   "learning: people compare pairs of model replies, a reward model is trained to predict their "
                   "preferences, and the model is then optimised to produce replies that the reward model scores highly.")


def sanity_checks(scorer: scoring.RewardScorer, pair: PreferencePair) -> list[dict]:
    """The original write-up's checks: a training pair's chosen and rejected reply, and a real
    definition of RLHF against a non-answer, each with the reward the model gives it."""
    rows = [(pair.prompt, pair.chosen, "training pair: chosen"), (pair.prompt, pair.rejected, "training pair: rejected"),
            (RLHF, RLHF_DEFINITION, "real definition"), (RLHF, "I don't know.", "non-answer")]
    rewards = scorer.score([list(p) for p, _, _ in rows], [r for _, r, _ in rows]).tolist()
    return [{"prompt (last turn)": p[-1]["content"], "reply": r, "label": label, "reward": w}
            for (p, r, label), w in zip(rows, rewards)]


def validation_metrics(model, tokenizer, pairs, max_length: int, cfg) -> tuple[dict, dict]:
    """Pairwise metrics of a reward model on the validation pairs, with the length analysis and,
    for a distributional head, how it uses its scores; returns (metrics, `scoring.pair_rewards` output)."""
    val = scoring.pair_rewards(model, tokenizer, pairs, max_length, cfg.eval_batch_size, cfg.amp, progress=True)
    metrics = stats.pairwise_metrics(val["chosen"], val["rejected"])
    metrics.update(stats.length_analysis(val["len_chosen"], val["len_rejected"], val["chosen"], val["rejected"]))
    metrics["n_truncated_val"] = int(val["truncated"].sum())
    if cfg.num_labels > 1:
        dist = stats.distribution_report(val["logits_chosen"], val["logits_rejected"])
        metrics.update({f"dist_{k}": v for k, v in dist.items()})
    return metrics, val
