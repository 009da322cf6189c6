"""Preference data: sources, one schema, the split, chat formatting and batching.

Every source is normalized to `PreferencePair(prompt, chosen, rejected, source)` where
`prompt` is a list of chat messages ending with a user turn, and `chosen` / `rejected` are
the two candidate final assistant replies.

Sources:
- hub: ``juyoungml/HelpSteer2-binarized`` (train / validation as published);
- offline: Anthropic HH-RLHF helpful test splits, shipped in the repository's ``data/hh-rlhf/``
  (MIT licence; or ``$ALIGNLIB_HH_RLHF_DIR``), split deterministically into 373 validation pairs
  and the rest.

Malformed rows are dropped and counted by reason (`PreferenceData.drop_reasons`). One defect is repaired
instead, and counted (`PreferenceData.repair_reasons`): a speaker name left without its colon in an HH-RLHF
transcript ("...reply.\n\nHuman" at the end, or right before the next "\n\nHuman:"), which would otherwise
stay in the reply or prompt turn and teach a model to end its replies with "Human".
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .hub import HUB_ERRORS, HUB_HINT, hub_available, short_error

HELPSTEER2_ID = "juyoungml/HelpSteer2-binarized"
# No commit hash of the dataset could be looked up from here (no hub access when this was written), so the
# pin is the branch "main": set $ALIGNLIB_DATA_REVISION to a commit hash to fix the data a run sees.
HELPSTEER2_REVISION = "main"
DATA_REVISION_ENV = "ALIGNLIB_DATA_REVISION"
HH_DIR_ENV = "ALIGNLIB_HH_RLHF_DIR"
# the published files (data/hh-rlhf/README.md): a copy that differs (cut short, a Git LFS pointer) is refused
HH_SHA256 = {
    "helpful-base_test.jsonl.gz": "8be3fc1a13b27901631696f2be6f184c799f1baeaf145f53ac5db24960adc37b",
    "helpful-online_test.jsonl.gz": "2094b210af6b2a792b1169d2930586c4b4b384d3b8a4a14460702d383c17df7f",
    "helpful-rejection-sampled_test.jsonl.gz": "6186fc698c638dd5c6bbb33e0c115762d6fdfac0a18969ff4901545307f89a54",
}
HH_FILES = tuple(HH_SHA256)


@dataclass(frozen=True)
class PreferencePair:
    prompt: tuple[dict, ...]  # chat messages, {"role": "user"|"assistant", "content": str}
    chosen: str
    rejected: str
    source: str
    # what was repaired in the source row ("": nothing); not part of the pair's identity (equality, hash)
    repaired: str = field(default="", compare=False, repr=False)
    # a repaired row's prompt as read before the repair, whose key places the pair in its split ("": `prompt`)
    split_prompt: tuple[dict, ...] = field(default=(), compare=False, repr=False)

    @property
    def prompt_key(self) -> str:
        """A stable id of the prompt (all turns), used to keep a prompt in one split only. A repaired row keeps the
        key of its prompt as read, so that the repair moved no pair between the splits the published runs used."""
        text = json.dumps(self.split_prompt or self.prompt, ensure_ascii=False, sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()


@dataclass
class PreferenceData:
    train: list[PreferencePair]
    validation: list[PreferencePair]
    source: str  # "hub:juyoungml/HelpSteer2-binarized" or "offline:hh-rlhf-helpful-test"
    n_dropped: int = 0
    drop_reasons: dict[str, int] = field(default_factory=dict)
    development: list[PreferencePair] = field(default_factory=list)  # carved from train, to tune on
    # pairs kept after a repair of their source row (over all pairs read, before any split or cap), and by what
    n_repaired: int = 0
    repair_reasons: dict[str, int] = field(default_factory=dict)


class MalformedRow(ValueError):
    """A row that cannot be turned into a preference pair (the reason is the message)."""


class DataFileError(ValueError):
    """A data file that cannot be read at all (not JSON lines, missing)."""


# ----------------------------------------------------------------------------- HH-RLHF

_HH_TURN = re.compile(r"\n\n(Human|Assistant):[ ]?")
# Speaker names without their colon that stand alone: at the end of the transcript (cut after the word) or
# right before the next real tag (an empty, doubled tag). 7 rows of the offline files have one; a name that
# goes on with text ("\n\nHumans are...", the misspelt tag "\n\nHumans: ...") is not one and is left as it is.
_HH_DANGLING_TAG = re.compile(r"(?:\n\n(?:Human|Assistant)[ \t]*)+(?=\n\n(?:Human|Assistant):|\s*\Z)")
DANGLING_TAG_REPAIR = "dangling 'Human'/'Assistant' tag (no colon) removed"


def parse_hh_transcript(text: str, repair: bool = True) -> list[dict]:
    """Split an HH-RLHF transcript ("\\n\\nHuman: ...\\n\\nAssistant: ...") into chat turns.

    A dangling speaker tag without colon (`_HH_DANGLING_TAG`) is removed first (`repair`): it would otherwise end
    the turn before it. A turn left empty by that is then caught like any empty turn.
    """
    if not isinstance(text, str):
        raise MalformedRow("transcript is not a string")
    parts = _HH_TURN.split(_HH_DANGLING_TAG.sub("", text) if repair else text)
    if parts[0].strip():
        raise MalformedRow("text before the first 'Human:' turn")
    messages = []
    for speaker, content in zip(parts[1::2], parts[2::2]):
        role = "user" if speaker == "Human" else "assistant"
        messages.append({"role": role, "content": content.strip()})
    if not messages:
        raise MalformedRow("no 'Human:'/'Assistant:' turns")
    return messages


def _check_turns(prompt: list[dict], chosen: str, rejected: str) -> None:
    if not prompt or prompt[-1]["role"] != "user":
        raise MalformedRow("prompt does not end with a user turn")
    for a, b in zip(prompt, prompt[1:]):
        if a["role"] == b["role"]:
            raise MalformedRow("two consecutive turns by the same speaker")
    if any(not m["content"] for m in prompt):
        raise MalformedRow("empty prompt turn")
    if not chosen.strip() or not rejected.strip():
        raise MalformedRow("empty response")
    if chosen.strip() == rejected.strip():
        raise MalformedRow("chosen and rejected are identical")


def hh_pair_from_row(row: dict) -> PreferencePair:
    """One HH-RLHF row {"chosen": transcript, "rejected": transcript} -> PreferencePair.

    Both transcripts must share every turn but the final assistant turn. A pair whose transcripts had a
    dangling speaker tag removed says so in `repaired`.
    """
    if not isinstance(row, dict):
        raise MalformedRow("row is not a JSON object")
    for key in ("chosen", "rejected"):
        if key not in row:
            raise MalformedRow(f"missing field {key!r}")
    chosen = parse_hh_transcript(row["chosen"])
    rejected = parse_hh_transcript(row["rejected"])
    if chosen[-1]["role"] != "assistant" or rejected[-1]["role"] != "assistant":
        raise MalformedRow("transcript does not end with an assistant turn")
    if chosen[:-1] != rejected[:-1]:
        raise MalformedRow("chosen and rejected differ before the final assistant turn")
    prompt = chosen[:-1]
    _check_turns(prompt, chosen[-1]["content"], rejected[-1]["content"])
    if not any(_HH_DANGLING_TAG.search(row[key]) for key in ("chosen", "rejected")):
        return PreferencePair(tuple(prompt), chosen[-1]["content"], rejected[-1]["content"], "hh-rlhf")
    as_read = tuple(parse_hh_transcript(row["chosen"], repair=False)[:-1])
    return PreferencePair(tuple(prompt), chosen[-1]["content"], rejected[-1]["content"], "hh-rlhf",
                          repaired=DANGLING_TAG_REPAIR, split_prompt=as_read)


def read_jsonl(path: Path) -> list:
    """Rows of a (optionally gzipped) JSON-lines file; a bad line raises DataFileError."""
    path = Path(path)
    if not path.exists():
        raise DataFileError(f"data file not found: {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    rows = []
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise DataFileError(
                        f"{path}, line {lineno}: not valid JSON ({e.msg}). "
                        "Expected one JSON object per line (JSON lines)."
                    ) from None
    except EOFError:  # gzip's answer to a file cut short (an interrupted download or copy)
        raise DataFileError(f"{path}: the gzip file ends early (truncated after {len(rows)} rows); "
                            "download or copy it again") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataFileError(f"{path}: cannot be read as (gzipped) UTF-8 JSON lines: {e}") from None
    return rows


def hh_rlhf_dir() -> Path:
    """Where the offline HH-RLHF files are: $ALIGNLIB_HH_RLHF_DIR, else the repository's data/hh-rlhf/."""
    if os.environ.get(HH_DIR_ENV, "").strip():
        return Path(os.environ[HH_DIR_ENV].strip()).expanduser()
    return Path(__file__).resolve().parent.parent / "data" / "hh-rlhf"


def check_sha256(path: Path, expected: str) -> None:
    """DataFileError unless the file's sha256 is `expected` (the published file's)."""
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    if digest != expected:
        raise DataFileError(
            f"{path} is not the published file (sha256 {digest[:12]}..., expected {expected[:12]}...): it was cut short, "
            "changed, or is a Git LFS pointer. Restore it (git checkout -- data/hh-rlhf) or point "
            f"${HH_DIR_ENV} to a folder with the published files (data/hh-rlhf/README.md).")


def pairs_from_rows(rows, parse) -> tuple[list[PreferencePair], Counter]:
    """Parse rows with `parse`; malformed rows are dropped and counted by reason."""
    pairs, dropped = [], Counter()
    for row in rows:
        try:
            pairs.append(parse(row))
        except MalformedRow as e:
            dropped[str(e)] += 1
    return pairs, dropped


def load_hh_rlhf(directory: Path | None = None) -> tuple[list[PreferencePair], Counter]:
    directory = Path(directory) if directory else hh_rlhf_dir()
    files = [directory / name for name in HH_FILES]
    missing = [str(f) for f in files if not f.exists()]
    if missing:
        raise DataFileError(
            f"offline preference data not found: {', '.join(missing)}. The repository ships them in data/hh-rlhf/ "
            f"(restore it with git checkout -- data/hh-rlhf), or point ${HH_DIR_ENV} to the folder that holds them."
        )
    pairs, dropped = [], Counter()
    for f in files:
        check_sha256(f, HH_SHA256[f.name])
        p, d = pairs_from_rows(read_jsonl(f), hh_pair_from_row)
        pairs += p
        dropped += d
    return pairs, dropped


def split_by_prompt(
    pairs: list[PreferencePair], n_validation: int, seed: int
) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """Deterministic split with exactly `n_validation` validation pairs.

    Pairs that share a prompt stay in the same split, so no validation prompt is trained on.
    """
    groups: dict[str, list[int]] = {}
    for i, pair in enumerate(pairs):
        groups.setdefault(pair.prompt_key, []).append(i)
    keys = sorted(groups)
    random.Random(seed).shuffle(keys)
    val_idx: list[int] = []
    for key in keys:
        if len(val_idx) + len(groups[key]) <= n_validation:
            val_idx += groups[key]
        if len(val_idx) == n_validation:
            break
    if len(val_idx) != n_validation:
        raise ValueError(f"cannot take {n_validation} validation pairs from {len(pairs)} pairs")
    val_set = set(val_idx)
    train = [pairs[i] for i in range(len(pairs)) if i not in val_set]
    random.Random(seed + 1).shuffle(train)
    return train, [pairs[i] for i in sorted(val_idx)]


# --------------------------------------------------------------------------- HelpSteer2

_NEMO_TURN = re.compile(r"^<extra_id_1>(User|Assistant)\s*$", re.MULTILINE)


def parse_nemo_prompt(text: str) -> list[dict]:
    """A HelpSteer2 prompt (earlier turns separated by '<extra_id_1>User' / '<extra_id_1>Assistant'
    lines) -> chat messages. The text before the first marker is the first user turn."""
    parts = _NEMO_TURN.split(text)
    messages = [{"role": "user", "content": parts[0].strip()}]
    for speaker, content in zip(parts[1::2], parts[2::2]):
        messages.append({"role": "user" if speaker == "User" else "assistant", "content": content.strip()})
    return messages


def helpsteer2_pair_from_row(row: dict) -> PreferencePair:
    for key in ("prompt", "chosen", "rejected"):
        if not isinstance(row.get(key), str):
            raise MalformedRow(f"missing or non-string field {key!r}")
    prompt = parse_nemo_prompt(row["prompt"])
    chosen, rejected = row["chosen"].strip(), row["rejected"].strip()
    _check_turns(prompt, chosen, rejected)
    return PreferencePair(tuple(prompt), chosen, rejected, "helpsteer2")


def helpsteer2_revision() -> str:
    """The HelpSteer2 revision to load: ``$ALIGNLIB_DATA_REVISION``, else `HELPSTEER2_REVISION`."""
    return os.environ.get(DATA_REVISION_ENV, "").strip() or HELPSTEER2_REVISION


def load_helpsteer2() -> tuple[list[PreferencePair], list[PreferencePair], Counter]:
    """HelpSteer2 (at `helpsteer2_revision()`) from the hub: train and validation pairs as published, and
    the malformed rows dropped, counted by reason."""
    from datasets import load_dataset

    ds = load_dataset(HELPSTEER2_ID, revision=helpsteer2_revision())
    train, d1 = pairs_from_rows(ds["train"], helpsteer2_pair_from_row)
    val, d2 = pairs_from_rows(ds["validation"], helpsteer2_pair_from_row)
    return train, val, d1 + d2


def source_setting(data_source: str | None) -> str:
    """The `load_preference_data` source that gives data of a record's `data_source` ("hub:..." -> "hub",
    "offline:..." -> "offline"; unknown -> "auto"): a run that uses a trained reward model takes the data it
    was trained on."""
    kind = (data_source or "").split(":")[0]
    return kind if kind in ("hub", "offline") else "auto"


def load_preference_data(cfg, source: str = "auto") -> PreferenceData:
    """Preference pairs for a run, as one schema.

    Args:
        cfg: a `DataConfig` (split size and seed, optional caps on the number of pairs).
        source: "hub" (HelpSteer2), "offline" (HH-RLHF) or "auto" (hub, else offline).

    `n_dropped` / `drop_reasons` count the malformed rows left out, `n_repaired` / `repair_reasons` the pairs
    kept after a repair of their row; both over every row read, before the split and the caps.
    """
    if source not in ("auto", "hub", "offline"):
        raise ValueError(f"unknown data source {source!r}; use 'auto', 'hub' or 'offline'")
    data = None
    if source == "hub" or (source == "auto" and hub_available()):
        try:
            train, val, dropped = load_helpsteer2()
            data = PreferenceData(train, val, f"hub:{HELPSTEER2_ID}", sum(dropped.values()), dict(dropped))
        except HUB_ERRORS as e:  # network, proxy, endpoint or repository failures only: a bug propagates
            if source == "hub":
                raise
            print(f"[alignlib] loading {HELPSTEER2_ID} from the hub failed ({short_error(e)}); using the offline "
                  f"HH-RLHF data instead. {HUB_HINT}")
    if data is None:
        pairs, dropped = load_hh_rlhf()
        train, val = split_by_prompt(pairs, cfg.n_validation, cfg.split_seed)
        data = PreferenceData(
            train, val, "offline:hh-rlhf-helpful-test", sum(dropped.values()), dict(dropped)
        )
    repairs = Counter(p.repaired for p in data.train + data.validation if p.repaired)
    data.n_repaired, data.repair_reasons = sum(repairs.values()), dict(repairs)
    if cfg.n_development:  # before the cap: the training pairs a profile keeps exclude the development prompts
        data.train, data.development = split_by_prompt(data.train, cfg.n_development, cfg.split_seed + 2)
    if cfg.max_train_pairs is not None:
        data.train = data.train[: cfg.max_train_pairs]
    if cfg.max_validation_pairs is not None:
        data.validation = data.validation[: cfg.max_validation_pairs]
    return data


# ------------------------------------------------------------------ chat formatting

def policy_prompt_text(tokenizer, messages) -> str:
    """The policy's input: the chat template with the assistant generation prompt."""
    return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)


def response_suffix(tokenizer) -> str:
    """What closes an assistant turn in the chat template (SmolLM2: '<|im_end|>\\n')."""
    probe = [{"role": "user", "content": "x"}, {"role": "assistant", "content": "RESPONSE"}]
    text = tokenizer.apply_chat_template(probe, tokenize=False)
    return text[text.rindex("RESPONSE") + len("RESPONSE"):]


@dataclass
class EncodedPair:
    """Token ids of one preference pair, the prompt shared by both responses."""
    prompt: list[int]
    chosen: list[int]
    rejected: list[int]
    truncated: bool  # prompt (or a response) lost tokens on the left to fit max_length


def encode_prompt_response(tokenizer, messages, response: str, max_length: int) -> tuple[list[int], bool]:
    """Token ids of prompt + response (+ end of turn), left-truncated to `max_length`.

    Returns (ids, truncated). The prompt and the response are tokenized separately and
    concatenated, exactly as a sampled reply follows its prompt during generation.
    """
    prompt = tokenizer(policy_prompt_text(tokenizer, messages), add_special_tokens=False)["input_ids"]
    resp = tokenizer(response + response_suffix(tokenizer), add_special_tokens=False)["input_ids"]
    ids = prompt + resp
    return ids[-max_length:], len(ids) > max_length


def encode_pair(tokenizer, pair: PreferencePair, max_length: int) -> EncodedPair:
    """Encode a pair so that prompt+chosen and prompt+rejected each fit `max_length`.

    Over-long pairs are truncated on the left, never dropped: the prompt loses its oldest
    tokens until the longer response fits; a response longer than `max_length` on its own
    keeps its last `max_length` tokens (and the prompt is then empty).
    """
    suffix = response_suffix(tokenizer)
    prompt = tokenizer(policy_prompt_text(tokenizer, pair.prompt), add_special_tokens=False)["input_ids"]
    chosen = tokenizer(pair.chosen + suffix, add_special_tokens=False)["input_ids"]
    rejected = tokenizer(pair.rejected + suffix, add_special_tokens=False)["input_ids"]
    longest = max(len(chosen), len(rejected))
    truncated = len(prompt) + longest > max_length
    if truncated:
        keep = max(max_length - longest, 0)
        prompt = prompt[len(prompt) - keep:] if keep else []
        chosen, rejected = chosen[-max_length:], rejected[-max_length:]
    return EncodedPair(prompt, chosen, rejected, truncated)


# --------------------------------------------------------------------------- batching

def left_pad(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token lists to the longest one.

    Returns:
        input_ids: (batch, max_len) long, pad_id on the left.
        attention_mask: (batch, max_len) long, 1 on real tokens.
    """
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        if s:
            ids[i, width - len(s):] = torch.tensor(s, dtype=torch.long)
            mask[i, width - len(s):] = 1
    return ids, mask



def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids of a left-padded batch: 0 at the first real token.

    Args:
        attention_mask: (batch, seq) 1 on real tokens, 0 on (left) padding.
    Returns:
        (batch, seq) long; padding positions get 0.
    """
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def length_bucketed_batches(
    lengths: list[int], batch_size: int, seed: int | None = 0, bucket_batches: int = 16
) -> list[list[int]]:
    """Batches of indices whose examples have similar lengths (little padding).

    The indices are shuffled, cut into chunks of `bucket_batches` batches, sorted by length
    inside each chunk, cut into batches, and the batch order is shuffled again, so training
    still sees the data in random order. `seed=None` keeps the input order (evaluation) and
    sorts all indices by length. Every index appears in exactly one batch.
    """
    idx = list(range(len(lengths)))
    if seed is None:
        idx.sort(key=lambda i: lengths[i])
        return [idx[i:i + batch_size] for i in range(0, len(idx), batch_size)]
    rng = random.Random(seed)
    rng.shuffle(idx)
    chunk = batch_size * bucket_batches
    batches = []
    for start in range(0, len(idx), chunk):
        part = sorted(idx[start:start + chunk], key=lambda i: lengths[i])
        batches += [part[i:i + batch_size] for i in range(0, len(part), batch_size)]
    rng.shuffle(batches)
    return batches


def padding_efficiency(lengths: list[int], batches: list[list[int]]) -> float:
    """Real tokens / processed tokens when each batch is padded to its longest example."""
    real = sum(lengths[i] for b in batches for i in b)
    processed = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    return real / processed


def token_lengths(tokenizer, pairs: list[PreferencePair]):
    """A pandas DataFrame of per-pair token counts: prompt (with chat template), chosen, rejected."""
    import pandas as pd

    suffix = response_suffix(tokenizer)

    def count(texts: list[str]) -> list[int]:  # one batched call: the tokenizer's Rust side does the loop
        return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]] if texts else []

    df = pd.DataFrame({"prompt": count([policy_prompt_text(tokenizer, p.prompt) for p in pairs]),
                       "chosen": count([p.chosen + suffix for p in pairs]),
                       "rejected": count([p.rejected + suffix for p in pairs]),
                       "turns": [len(p.prompt) for p in pairs]})
    df["pair_unpacked"] = 2 * df.prompt + df.chosen + df.rejected
    df["pair_packed"] = df.prompt + df.chosen + df.rejected
    df["longest_view"] = df.prompt + df[["chosen", "rejected"]].max(axis=1)
    return df


def batching_report(tokenizer, pairs: list[PreferencePair], max_length: int, batch_size: int,
                    seed: int = 0) -> dict:
    """What one training epoch costs in tokens under each batching choice.

    Returns padding efficiency (real / processed tokens) of length-bucketed and of plain
    random batches of packed pairs, the share of tokens that shared-prompt packing saves
    against two separate sequences per pair, and how many pairs needed left truncation.
    """
    enc = [encode_pair(tokenizer, p, max_length) for p in pairs]
    packed = [len(e.prompt) + len(e.chosen) + len(e.rejected) for e in enc]
    unpacked = sum(2 * len(e.prompt) + len(e.chosen) + len(e.rejected) for e in enc)
    idx = list(range(len(pairs)))
    random.Random(seed).shuffle(idx)
    plain = [idx[i:i + batch_size] for i in range(0, len(idx), batch_size)]
    return {
        "padding_efficiency_bucketed": padding_efficiency(packed, length_bucketed_batches(packed, batch_size, seed)),
        "padding_efficiency_random": padding_efficiency(packed, plain),
        "packing_token_saving": 1 - sum(packed) / unpacked,
        "n_truncated": sum(e.truncated for e in enc),
        "tokens_per_epoch_packed": sum(packed),
    }
