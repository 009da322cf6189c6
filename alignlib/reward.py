"""Reward models: the forward pass with explicit pooling, training, scoring, evaluation.

Pooling. A reward model reads the whole text and returns the head's output at the LAST
real token. Batches are padded on the left, so that token is always at position -1, and the
pad token (<|im_end|>, which also closes every chat turn) is never used to find it: a rule
such as "first pad token - 1" would land on the end of the system turn and score the
prompt only.

Shared-prompt packing (training and pair evaluation). The chosen and rejected replies of a
pair share their whole prompt, often most of the tokens. Instead of two sequences
[prompt, chosen] and [prompt, rejected], one sequence [prompt, chosen, rejected] is run,
with an attention mask that hides chosen from rejected and position ids that restart the
rejected reply where the chosen one started. Each reply then sees exactly what it would see
alone, and the prompt is processed once (on HH-RLHF, about a third fewer tokens).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from . import precision, results
from .data import EncodedPair, encode_pair, encode_prompt_response, left_pad, length_bucketed_batches
from .evaluate import bootstrap_ci
from .losses import bradley_terry_loss, expected_score, expected_score_loss, prob_beats_loss

# ------------------------------------------------------------------ pure tensor functions


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids of a left-padded batch: 0 at the first real token.

    Args:
        attention_mask: (batch, seq) 1 on real tokens, 0 on (left) padding.
    Returns:
        (batch, seq) long; padding positions get 0.
    """
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def packed_pair_mask(segments: torch.Tensor) -> torch.Tensor:
    """Attention mask of packed [prompt, chosen, rejected] sequences.

    Args:
        segments: (batch, seq) long, 0 = padding, 1 = prompt, 2 = chosen, 3 = rejected.
    Returns:
        (batch, 1, seq, seq) bool, True where query i may attend key j: causal (j <= i),
        key not padding, and never a rejected query on a chosen key. Padding queries attend
        to themselves only, so no row is empty (an empty row gives NaN in softmax).
    """
    seq = segments.shape[1]
    causal = torch.ones(seq, seq, dtype=torch.bool).tril()
    q, k = segments[:, :, None], segments[:, None, :]
    allowed = causal & (k != 0) & ~((q == 3) & (k == 2))
    eye = torch.eye(seq, dtype=torch.bool)
    allowed = allowed | (eye & (q == 0))
    return allowed[:, None]


@dataclass
class PackedPairs:
    input_ids: torch.Tensor  # (batch, seq)
    position_ids: torch.Tensor  # (batch, seq)
    attention_mask: torch.Tensor  # (batch, 1, seq, seq) bool
    chosen_end: torch.Tensor  # (batch,) index of the chosen reply's last token
    rejected_end: torch.Tensor  # (batch,) index of the rejected reply's last token (= seq - 1)
    n_tokens: int  # real tokens in the batch


def pack_pairs(pairs: list[EncodedPair], pad_id: int) -> PackedPairs:
    """Left-padded packed sequences [prompt, chosen, rejected], one per pair."""
    width = max(len(p.prompt) + len(p.chosen) + len(p.rejected) for p in pairs)
    ids = torch.full((len(pairs), width), pad_id, dtype=torch.long)
    seg = torch.zeros((len(pairs), width), dtype=torch.long)
    pos = torch.zeros((len(pairs), width), dtype=torch.long)
    chosen_end = torch.zeros(len(pairs), dtype=torch.long)
    for i, p in enumerate(pairs):
        n_p, n_c, n_r = len(p.prompt), len(p.chosen), len(p.rejected)
        start = width - (n_p + n_c + n_r)
        ids[i, start:] = torch.tensor(p.prompt + p.chosen + p.rejected)
        seg[i, start:] = torch.tensor([1] * n_p + [2] * n_c + [3] * n_r)
        pos[i, start:] = torch.cat([torch.arange(n_p + n_c), torch.arange(n_p, n_p + n_r)])
        chosen_end[i] = start + n_p + n_c - 1
    rejected_end = torch.full((len(pairs),), width - 1, dtype=torch.long)
    return PackedPairs(ids, pos, packed_pair_mask(seg), chosen_end, rejected_end, int((seg > 0).sum()))


def reward_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """(batch, 1) scalar head -> (batch,) reward; (batch, n>1) distribution head -> E[p]."""
    return logits[:, 0] if logits.shape[-1] == 1 else expected_score(logits)


# ------------------------------------------------------------------------- forward pass


def _body_and_head(model):
    """The transformer body and the score head of a (possibly PEFT-wrapped) RM."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.model, base.score


def head_at(model, input_ids, attention_mask, position_ids, index) -> torch.Tensor:
    """Run the RM body once and apply the head at the given positions.

    Args:
        input_ids, position_ids: (batch, seq).
        attention_mask: (batch, seq) for plain left-padded batches, or (batch, 1, seq, seq)
            bool for packed pairs.
        index: (batch, k) positions to read per row.
    Returns:
        (batch, k, num_labels) head outputs.
    """
    body, head = _body_and_head(model)
    hidden = body(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                  use_cache=False).last_hidden_state
    rows = torch.arange(hidden.shape[0], device=hidden.device)[:, None]
    return head(hidden[rows, index])


def pair_logits(model, packed: PackedPairs) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen, rejected) head outputs, each (batch, num_labels), from one packed forward pass."""
    dev = next(model.parameters()).device
    index = torch.stack([packed.chosen_end, packed.rejected_end], dim=1).to(dev)
    out = head_at(model, packed.input_ids.to(dev), packed.attention_mask.to(dev),
                  packed.position_ids.to(dev), index)
    return out[:, 0], out[:, 1]


def sequence_logits(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(batch, num_labels) head outputs at the last token of left-padded sequences."""
    dev = next(model.parameters()).device
    input_ids, attention_mask = input_ids.to(dev), attention_mask.to(dev)
    last = torch.full((input_ids.shape[0], 1), input_ids.shape[1] - 1, device=dev)
    return head_at(model, input_ids, attention_mask, positions_from_mask(attention_mask), last)[:, 0]


# ---------------------------------------------------------------------------- losses


def pair_loss(cfg, logits_c: torch.Tensor, logits_r: torch.Tensor) -> torch.Tensor:
    """The training loss named by `cfg.loss` on head outputs (batch, num_labels)."""
    if cfg.loss == "bradley_terry":
        if logits_c.shape[-1] != 1:
            raise ValueError("bradley_terry needs a one-output head (num_labels=1)")
        return bradley_terry_loss(logits_c[:, 0], logits_r[:, 0], cfg.margin, cfg.center_coef)
    if logits_c.shape[-1] < 2:
        raise ValueError(f"loss {cfg.loss!r} needs a distribution head (num_labels > 1)")
    if cfg.loss == "expected_score":
        return expected_score_loss(logits_c, logits_r)
    if cfg.loss == "prob_beats":
        return prob_beats_loss(logits_c, logits_r)
    raise ValueError(f"unknown reward-model loss {cfg.loss!r}; use bradley_terry, expected_score or prob_beats")


# --------------------------------------------------------------------------- training


def train_reward_model(model, tokenizer, pairs, cfg, max_length: int, progress: bool = True,
                       checkpoint_dir=None, checkpoint_every: int = 50) -> dict:
    """Train a reward model on preference pairs; returns the per-step history.

    One optimizer step = `cfg.batch_size * cfg.grad_accum` pairs, each pair one packed
    sequence, the batches length-bucketed. AdamW on the trainable (LoRA + head) parameters,
    linear warm-up then linear decay, gradient-norm clipping. Under fp16 (`cfg.amp`), the loss is
    scaled (`precision.grad_scaler`); a step whose gradients overflow is skipped, logged with
    grad_norm None, and counted, and the run stops only when the loss itself is non-finite or
    `precision.MAX_SKIPS_IN_A_ROW` steps in a row are skipped.

    With `checkpoint_dir`, the state is saved every `checkpoint_every` steps and at the end,
    and a run that finds a checkpoint of the same settings there continues from it (giving
    the same result as an uninterrupted run).
    """
    from . import checkpoint

    device = next(model.parameters()).device
    results.seed_everything(cfg.seed)
    encoded = [encode_pair(tokenizer, p, max_length) for p in pairs]
    lengths = [len(e.prompt) + len(e.chosen) + len(e.rejected) for e in encoded]
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    micro_batches = [b for epoch in range(cfg.epochs)
                     for b in length_bucketed_batches(lengths, cfg.batch_size, seed=cfg.seed + epoch)]
    total_steps = len(micro_batches) // cfg.grad_accum
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps)

    def lr_factor(step):  # linear warm-up, then linear decay to 0
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        return max(0.0, (total_steps - step) / max(1, total_steps - cfg.warmup_steps))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    scaler = precision.grad_scaler(cfg.amp, device)  # fp16 only: dynamic loss scaling
    history = {"step": [], "loss": [], "accuracy": [], "lr": [], "grad_norm": [], "tokens": []}  # grad_norm None: skipped
    step = 0
    fingerprint = checkpoint.fingerprint(cfg, max_length=max_length, n_pairs=len(pairs))
    if checkpoint_dir is not None:
        resumed = checkpoint.load(checkpoint_dir, fingerprint, model, opt)
        if resumed is not None:
            step, extra = resumed
            history = extra["history"]
            sched.load_state_dict(extra["scheduler"])
            scaler.load_state_dict(extra["scaler"])
            print(f"[alignlib] resuming reward-model training at step {step} from {checkpoint_dir}")

    def save_checkpoint():
        checkpoint.save(checkpoint_dir, step, fingerprint, model, opt,
                        {"history": history, "scheduler": sched.state_dict(), "scaler": scaler.state_dict()})

    model.train()
    bar = tqdm(total=total_steps, initial=step, desc="RM training", disable=not progress)
    while step < total_steps:
        group = micro_batches[step * cfg.grad_accum:(step + 1) * cfg.grad_accum]
        sums = {"loss": 0.0, "right": 0, "n": 0, "tokens": 0}
        for batch in group:  # gradient accumulation over the micro-batches of one step
            packed = pack_pairs([encoded[i] for i in batch], tokenizer.pad_token_id)
            with precision.autocast(cfg.amp, device):
                logits_c, logits_r = pair_logits(model, packed)
                loss = pair_loss(cfg, logits_c.float(), logits_r.float())
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite RM loss ({loss.item()}) at step {step}; the last good "
                                         f"checkpoint (if any) is in {checkpoint_dir}")
            scaler.scale(loss / cfg.grad_accum).backward()
            with torch.no_grad():
                margin = reward_from_logits(logits_c.float()) - reward_from_logits(logits_r.float())
            sums["loss"] += loss.item() * len(batch)
            sums["right"] += int((margin > 0).sum())
            sums["n"] += len(batch)
            sums["tokens"] += packed.n_tokens
        where = f"at step {step} (last good checkpoint, if any: {checkpoint_dir})"
        grad_norm = precision.clip_and_step(opt, scaler, params, cfg.max_grad_norm, where)  # None: fp16 skip
        opt.zero_grad(set_to_none=True)
        history["step"].append(step + 1)
        history["loss"].append(sums["loss"] / sums["n"])
        history["accuracy"].append(sums["right"] / sums["n"])
        history["lr"].append(sched.get_last_lr()[0])
        history["grad_norm"].append(grad_norm)
        history["tokens"].append(sums["tokens"])
        precision.raise_if_stuck(history["grad_norm"], where)
        if grad_norm is not None:  # as accelerate does: a skipped step does not advance the schedule
            sched.step()
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{np.mean(history['loss'][-20:]):.3f}", acc=f"{np.mean(history['accuracy'][-20:]):.2f}")
        if checkpoint_dir is not None and (step % checkpoint_every == 0 or step == total_steps):
            save_checkpoint()
    bar.close()
    model.eval()
    return history


# ---------------------------------------------------------------- evaluation, scoring


@torch.inference_mode()
def pair_rewards(model, tokenizer, pairs, max_length: int, batch_size: int = 16,
                 amp: str = "none", progress: bool = False) -> dict:
    """Rewards of every pair's chosen and rejected reply (packed, length-sorted batches).

    Returns a dict of numpy arrays: "chosen", "rejected" (n,) rewards, "logits_chosen",
    "logits_rejected" (n, num_labels), "truncated" (n,) bool, "len_chosen", "len_rejected" (n,)
    reply lengths in tokens (after truncation).
    """
    encoded = [encode_pair(tokenizer, p, max_length) for p in pairs]
    lengths = [len(e.prompt) + len(e.chosen) + len(e.rejected) for e in encoded]
    out_c, out_r = [None] * len(pairs), [None] * len(pairs)
    for batch in tqdm(length_bucketed_batches(lengths, batch_size, seed=None), desc="scoring pairs",
                      disable=not progress):
        with precision.autocast(amp, next(model.parameters()).device):
            lc, lr = pair_logits(model, pack_pairs([encoded[i] for i in batch], tokenizer.pad_token_id))
        for j, i in enumerate(batch):
            out_c[i], out_r[i] = lc[j].float().cpu(), lr[j].float().cpu()
    logits_c, logits_r = torch.stack(out_c), torch.stack(out_r)
    return {
        "chosen": reward_from_logits(logits_c).numpy(),
        "rejected": reward_from_logits(logits_r).numpy(),
        "logits_chosen": logits_c.numpy(),
        "logits_rejected": logits_r.numpy(),
        "truncated": np.array([e.truncated for e in encoded]),
        "len_chosen": np.array([len(e.chosen) for e in encoded]),
        "len_rejected": np.array([len(e.rejected) for e in encoded]),
    }


def pairwise_metrics(r_chosen: np.ndarray, r_rejected: np.ndarray, seed: int = 0) -> dict:
    """Accuracy (with bootstrap 95% interval), Bradley-Terry loss and reward statistics.

    Args:
        r_chosen, r_rejected: (n,) rewards of the chosen and rejected replies.
    """
    margin = np.asarray(r_chosen, dtype=np.float64) - np.asarray(r_rejected, dtype=np.float64)
    correct = (margin > 0).astype(np.float64)
    loss = np.logaddexp(0.0, -margin)  # -log sigmoid(margin), stable
    return {
        "val_accuracy": float(correct.mean()),
        "val_accuracy_ci95": bootstrap_ci(correct, seed=seed),
        "val_loss": float(loss.mean()),
        "val_margin_mean": float(margin.mean()),
        "reward_chosen_mean": float(np.mean(r_chosen)),
        "reward_chosen_std": float(np.std(r_chosen)),
        "reward_rejected_mean": float(np.mean(r_rejected)),
        "reward_rejected_std": float(np.std(r_rejected)),
        "n_pairs": int(margin.size),
    }


def check_tokenizer_matches(model, tokenizer) -> None:
    """Refuse a reward model whose vocabulary or pad token does not match the tokenizer's
    (token ids would silently mean other tokens)."""
    config = model.config
    vocab = getattr(config, "vocab_size", None)
    if vocab is not None and vocab != len(tokenizer):
        raise ValueError(f"the reward model has a vocabulary of {vocab} tokens but the tokenizer has "
                         f"{len(tokenizer)}: they belong to different models. Load both from the same base "
                         "(alignlib.models.load_tokenizer / load_reward_model).")
    if getattr(config, "pad_token_id", None) not in (None, tokenizer.pad_token_id):
        raise ValueError(f"the reward model's pad_token_id ({config.pad_token_id}) differs from the "
                         f"tokenizer's ({tokenizer.pad_token_id})")


class RewardScorer:
    """`score(prompts, responses)` for any reward model, batched, without gradients.

    `prompts` are chat-message lists, `responses` strings. The scalar RM returns its output;
    a distributional RM returns E[p] (see also `distribution` and `sample`).
    """

    def __init__(self, model, tokenizer, max_length: int = 512, batch_size: int = 16, amp: str = "none"):
        self.model, self.tokenizer = model.eval(), tokenizer
        self.max_length, self.batch_size, self.amp = max_length, batch_size, amp
        self.source = getattr(model, "alignlib_source", "unknown")
        check_tokenizer_matches(model, tokenizer)

    @torch.inference_mode()
    def logits(self, prompts, responses) -> torch.Tensor:
        """(n, num_labels) head outputs at the end of each prompt + response."""
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        encoded = [encode_prompt_response(self.tokenizer, p, r, self.max_length)[0]
                   for p, r in zip(prompts, responses)]
        order = length_bucketed_batches([len(e) for e in encoded], self.batch_size, seed=None)
        out = [None] * len(encoded)
        for batch in order:
            ids, mask = left_pad([encoded[i] for i in batch], self.tokenizer.pad_token_id)
            with precision.autocast(self.amp, next(self.model.parameters()).device):
                res = sequence_logits(self.model, ids, mask).float().cpu()
            for j, i in enumerate(batch):
                out[i] = res[j]
        return torch.stack(out)

    def score(self, prompts, responses) -> torch.Tensor:
        """(n,) rewards: the scalar output, or E[p] for a distributional head."""
        return reward_from_logits(self.logits(prompts, responses))

    def distribution(self, prompts, responses) -> torch.Tensor:
        """(n, 10) p over the scores 1..10 (distributional head only)."""
        logits = self.logits(prompts, responses)
        if logits.shape[-1] < 2:
            raise ValueError("distribution() needs a distributional reward model (num_labels > 1)")
        return logits.softmax(-1)

    def sample(self, prompts, responses, generator: torch.Generator | None = None) -> torch.Tensor:
        """(n,) a score r ~ p per reply (1..10), drawn from the predicted distribution."""
        p = self.distribution(prompts, responses)
        return (torch.multinomial(p, 1, generator=generator)[:, 0] + 1).float()


def train_flops_per_token(model) -> float:
    """Model FLOPs per token of LoRA training: ~4 x the body's parameters.

    2N for the forward pass and 2N for the gradients w.r.t. the activations in the backward
    pass (the frozen weights get no gradient; the LoRA matrices add < 1%). Attention scores
    and embeddings are left out, so this slightly undercounts.
    """
    body, _ = _body_and_head(model)
    n = sum(p.numel() for name, p in body.named_parameters() if "embed_tokens" not in name and "lora_" not in name)
    return 4.0 * n


def save_reward_model(model, path, max_length: int) -> None:
    """Save the PEFT adapter and the head (PEFT `save_pretrained` format), plus alignlib's notes."""
    import json
    from pathlib import Path

    path = Path(path)
    model.save_pretrained(path)
    body, head = _body_and_head(model)
    (path / "alignlib_rm.json").write_text(json.dumps({
        "num_labels": int(model.config.num_labels) if hasattr(model, "config") else None,
        "max_length": max_length, "model_source": getattr(model, "alignlib_source", "unknown"),
        "base_model": "HuggingFaceTB/SmolLM2-135M-Instruct"}, indent=1) + "\n")
