"""Shared-prompt packing of preference pairs for the reward model (training and pair evaluation).

The chosen and rejected replies of a pair share their whole prompt, often most of the tokens.
Instead of two sequences [prompt, chosen] and [prompt, rejected], one sequence
[prompt, chosen, rejected] is run, with an attention mask that hides chosen from rejected and
position ids that restart the rejected reply where the chosen one started. Each reply then
sees exactly what it would see alone, and the prompt is processed once (on HH-RLHF, about a
third fewer tokens).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .data import EncodedPair


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

