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


def generate_for_eval(policy, tokenizer, prompts, cfg, seed: int = EVAL_SEED, progress: bool = True,
                      max_new_tokens: int | None = None) -> dict:
    """Replies of `policy` to every prompt with the profile's decoding and a fixed seed per batch,
    so that two policies are compared on the same prompts and the same random stream (a progress
    bar counts the prompts unless `progress` is False). Each reply may take `max_new_tokens` new
    tokens (default `cfg.eval_budget`, the held-out evaluation's budget).

    Returns {"texts": [str], "tokens": [[int]] (up to and including the first eos), "ended": [bool],
    "budget": int}.
    """
    budget = cfg.eval_budget if max_new_tokens is None else max_new_tokens
    texts, tokens, ended = [], [], []
    bar = tqdm(total=len(prompts), desc=f"generating replies (up to {budget} tokens)", unit="prompt", leave=False,
               disable=not progress)
    for b, start in enumerate(range(0, len(prompts), cfg.eval_batch_size)):
        roll = rollout.sample(policy, tokenizer, prompts[start:start + cfg.eval_batch_size], budget,
                              cfg.top_p, cfg.temperature, seed=seed + b, max_prompt_tokens=cfg.max_prompt_tokens,
                              amp=cfg.amp)
        texts += roll.texts
        tokens += [r[m.bool()].tolist() for r, m in zip(roll.reply_ids, roll.resp_mask)]
        ended += roll.ended.tolist()
        bar.update(len(roll.texts))
    bar.close()
    return {"texts": texts, "tokens": tokens, "ended": ended, "budget": budget}


def cut_replies(gen: dict, cap: int, tokenizer) -> dict:
    """`generate_for_eval`'s replies as they would have been sampled with a budget of `cap` new tokens.

    Each token is drawn with noise that depends only on the seed, the batch row and the step
    (`rollout.GumbelSampler`), so a reply sampled with a smaller budget is the first `cap` tokens
    of the same reply (up to float rounding where the two budgets take different KV caches,
    `rollout.kv_cache_for`): cutting gives it without sampling again. A reply ended within the cap
    only if its end-of-turn token is among them.

    Args:
        gen: {"texts", "tokens", "ended", "budget"} with budget >= cap.
    """
    if cap > gen["budget"]:
        raise ValueError(f"replies sampled with {gen['budget']} new tokens cannot show a budget of {cap}")
    tokens = [t[:cap] for t in gen["tokens"]]
    ended = [bool(e and len(t) <= cap) for e, t in zip(gen["ended"], gen["tokens"])]
    texts = [tokenizer.decode(t, skip_special_tokens=True).strip() for t in tokens]
    return {"texts": texts, "tokens": tokens, "ended": ended, "budget": cap}


# tokens of reply (rows x longest reply) per forward pass of the KL measurement: the logits of two models over a
# 49k vocabulary take 2 x 4 x 49152 bytes per token, so 8192 tokens keep each pass near 3 GB
KL_TOKENS_PER_PASS = 8192


def kl_to_reference(policy, ref_policy, tokenizer, prompts, replies_tokens, cfg, progress: bool = True) -> float:
    """Mean over prompts of sum_t (log pi - log pi_ref) on the policy's own replies (nats per reply).

    Args:
        replies_tokens: per prompt, the policy's reply tokens (`generate_for_eval`'s "tokens").
        cfg: its `amp` is used, and its `eval_batch_size` rows per pass, fewer when the replies are long
            (at most KL_TOKENS_PER_PASS reply tokens a pass).
        progress: show a progress bar over the prompts.
    """
    dev = next(policy.parameters()).device
    longest = max([len(t) for t in replies_tokens] + [1])
    rows = max(1, min(cfg.eval_batch_size, KL_TOKENS_PER_PASS // longest))  # long replies: fewer rows per pass
    total = []
    bar = tqdm(total=len(prompts), desc="KL to reference", unit="prompt", leave=False, disable=not progress)
    for start in range(0, len(prompts), rows):
        roll = rollout.from_replies(tokenizer, prompts[start:start + rows], replies_tokens[start:start + rows])
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
        whether the replies ended or were cut at the cap ("gain_by_ending", `stats.gain_by_ending`), with the
        gain where both replies ended also at the top level ("reward_delta_both_ended" and its interval).
    """
    len_sft, len_rl = [len(t) for t in gen_sft["tokens"]], [len(t) for t in gen_rl["tokens"]]
    by_ending = gain_by_ending(rewards_sft, rewards_rl, gen_sft["ended"], gen_rl["ended"], seed)
    return {
        **paired_reward_comparison(rewards_sft, rewards_rl, seed),
        **length_controlled_gain(rewards_sft, rewards_rl, len_sft, len_rl, seed=seed),
        "gain_by_ending": by_ending,
        "reward_delta_both_ended": by_ending["both_ended"]["reward_delta_mean"],
        "reward_delta_both_ended_ci95": by_ending["both_ended"]["reward_delta_ci95"],
        "length_sft": float(np.mean(len_sft)), "length_rl": float(np.mean(len_rl)),
        "distinct2_sft": distinct_n(gen_sft["tokens"], 2), "distinct2_rl": distinct_n(gen_rl["tokens"], 2),
        "repetition_sft": repetition_rate(gen_sft["tokens"]), "repetition_rl": repetition_rate(gen_rl["tokens"]),
        "ended_frac_sft": float(np.mean(gen_sft["ended"])), "ended_frac_rl": float(np.mean(gen_rl["ended"])),
    }


def compare_at_cap(rewards_sft, rewards_rl, cut_sft: dict, cut_rl: dict, seed: int = 0) -> dict:
    """The paired comparison of the replies cut back to the training cap (`cut_replies`): what an evaluation
    with the training cap as its budget would give, on the same draws. The keys of
    `stats.paired_reward_comparison`, the shares of replies that ended within the cap and the gain split by
    ending (`stats.gain_by_ending`), each prefixed "cap_"."""
    out = {**paired_reward_comparison(rewards_sft, rewards_rl, seed),
           "gain_by_ending": gain_by_ending(rewards_sft, rewards_rl, cut_sft["ended"], cut_rl["ended"]),
           "ended_frac_sft": float(np.mean(cut_sft["ended"])), "ended_frac_rl": float(np.mean(cut_rl["ended"])),
           "budget": cut_rl["budget"]}
    return {f"cap_{k}": v for k, v in out.items() if k != "n_eval_prompts"}


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
