"""Reward-model forward pass and scoring: pooling at the last token, packed pairs, the scorer.

Pooling. A reward model reads the whole text and returns the head's output at the LAST
real token. Batches are padded on the left, so that token is always at position -1, and the
pad token (<|im_end|>, which also closes every chat turn) is never used to find it: a rule
such as "first pad token - 1" would land on the end of the system turn and score the
prompt only. Pairs run packed (`packing.pack_pairs`), and the head is read at the end of
each reply.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from . import precision
from .config import scoring_length
from .data import encode_pair, encode_prompt_response, left_pad, length_bucketed_batches, positions_from_mask
from .losses import expected_score
from .models import body_and_head, load_reward_model
from .packing import PackedPairs, pack_pairs


def reward_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """(batch, 1) scalar head -> (batch,) reward; (batch, n>1) distribution head -> E[p]."""
    return logits[:, 0] if logits.shape[-1] == 1 else expected_score(logits)


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
    body, head = body_and_head(model)
    hidden = body(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                  use_cache=False).last_hidden_state
    rows = torch.arange(hidden.shape[0], device=hidden.device)[:, None]
    return head(hidden[rows, index])


class HeadAt(torch.nn.Module):
    """`head_at` of a reward model as a module. The training loop hands this to `accelerate`, whose
    DDP wrapper averages the gradients of forward passes that go through it."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, position_ids, index) -> torch.Tensor:
        return head_at(self.model, input_ids, attention_mask, position_ids, index)


def pair_logits(heads, packed: PackedPairs) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen, rejected) head outputs, each (batch, num_labels), from one packed forward pass.

    `heads`: a `HeadAt` of the reward model (or the `accelerate`-wrapped one)."""
    dev = next(heads.parameters()).device
    index = torch.stack([packed.chosen_end, packed.rejected_end], dim=1).to(dev)
    out = heads(packed.input_ids.to(dev), packed.attention_mask.to(dev), packed.position_ids.to(dev), index)
    return out[:, 0], out[:, 1]


def sequence_logits(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(batch, num_labels) head outputs at the last token of left-padded sequences."""
    dev = next(model.parameters()).device
    input_ids, attention_mask = input_ids.to(dev), attention_mask.to(dev)
    last = torch.full((input_ids.shape[0], 1), input_ids.shape[1] - 1, device=dev)
    return head_at(model, input_ids, attention_mask, positions_from_mask(attention_mask), last)[:, 0]


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
            lc, lr = pair_logits(HeadAt(model), pack_pairs([encoded[i] for i in batch], tokenizer.pad_token_id))
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


def load_scorer(adapter, tokenizer, profile, amp: str | None = None, data_source: str | None = None) -> RewardScorer:
    """The scorer of a saved reward model (`records.find_adapter`), its head read from the adapter's notes, reading
    the profile's longest prompt and reply whole (`config.scoring_length`), in the evaluation's batches, in precision `amp` (default: the profile's REINFORCE one).
    `data_source`: the run's preference data, which the reward model must have learned on
    (`models.load_reward_model`)."""
    model = load_reward_model(adapter, data_source=data_source)
    return RewardScorer(model, tokenizer, scoring_length(profile), profile.rm_scalar.eval_batch_size,
                        profile.reinforce.amp if amp is None else amp)
