import gzip
import json
import re
from pathlib import Path

import pytest

from alignlib import config, data
from alignlib.data import MalformedRow, PreferencePair


def hh(*turns):
    return "".join(f"\n\n{who}: {text}" for who, text in turns)


GOOD = {"chosen": hh(("Human", "Hi"), ("Assistant", "Hello!"), ("Human", "Tell me a joke"), ("Assistant", "Why did...")),
        "rejected": hh(("Human", "Hi"), ("Assistant", "Hello!"), ("Human", "Tell me a joke"), ("Assistant", "No."))}


def test_parse_hh_row_into_chat_turns():
    pair = data.hh_pair_from_row(GOOD)
    assert pair.prompt == ({"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                           {"role": "user", "content": "Tell me a joke"})
    assert (pair.chosen, pair.rejected, pair.source) == ("Why did...", "No.", "hh-rlhf")


@pytest.mark.parametrize("row, reason", [
    ({"rejected": GOOD["rejected"]}, "missing field 'chosen'"),
    ({"chosen": hh(("Human", "Hi"), ("Assistant", "")), "rejected": hh(("Human", "Hi"), ("Assistant", "x"))}, "empty response"),
    ({"chosen": hh(("Human", "Hi"), ("Assistant", "same")), "rejected": hh(("Human", "Hi"), ("Assistant", "same"))}, "identical"),
    ({"chosen": hh(("Human", "Hi"), ("Assistant", "a")), "rejected": hh(("Human", "Hey"), ("Assistant", "b"))}, "differ before"),
    ({"chosen": hh(("Human", ""), ("Assistant", "a")), "rejected": hh(("Human", ""), ("Assistant", "b"))}, "empty prompt"),
    ({"chosen": "no speaker tags", "rejected": "no speaker tags"}, "before the first"),
    ({"chosen": hh(("Human", "Hi")), "rejected": hh(("Human", "Hi"))}, "end with an assistant"),
])
def test_malformed_rows_are_rejected_with_a_reason(row, reason):
    with pytest.raises(MalformedRow, match=reason):
        data.hh_pair_from_row(row)


def test_unicode_row_survives_parsing():
    row = {"chosen": hh(("Human", "Qu'est-ce que 東京? 🤔"), ("Assistant", "Tōkyō — la capitale ✓")),
           "rejected": hh(("Human", "Qu'est-ce que 東京? 🤔"), ("Assistant", "Je ne sais pas"))}
    pair = data.hh_pair_from_row(row)
    assert pair.prompt[0]["content"] == "Qu'est-ce que 東京? 🤔" and pair.chosen == "Tōkyō — la capitale ✓"


def test_rows_are_dropped_and_counted_never_mangled():
    bad = {"chosen": GOOD["chosen"]}
    pairs, dropped = data.pairs_from_rows([GOOD, bad, GOOD], data.hh_pair_from_row)
    assert len(pairs) == 2 and dropped == {"missing field 'rejected'": 1}


# a speaker tag as a turn boundary, or standing alone without its colon: neither may be left inside a turn
SPEAKER_TAG = re.compile(r"\n\n(Human|Assistant)(:|[ \t]*(\n|$))")


def texts_of(pair):
    return [m["content"] for m in pair.prompt] + [pair.chosen, pair.rejected]


def test_a_dangling_speaker_tag_is_removed_and_the_pair_says_so():
    """The offline files' defect: "Human" without its colon, doubled before the next turn or at the very end."""
    prompt = hh(("Human", "Hi"), ("Assistant", "Hello!")) + "\n\nHuman" + hh(("Human", "Tell me a joke"))
    row = {"chosen": prompt + hh(("Assistant", "Why did...")) + "\n\nHuman",
           "rejected": prompt + hh(("Assistant", "No.\n\nHumans are funny.\n\nHumans: tell another"))}
    pair = data.hh_pair_from_row(row)
    assert pair.prompt == data.hh_pair_from_row(GOOD).prompt
    assert pair.chosen == "Why did..." and not any(SPEAKER_TAG.search(t) for t in texts_of(pair))
    assert pair.rejected == "No.\n\nHumans are funny.\n\nHumans: tell another"  # the reply's own words stay
    assert pair.repaired == data.DANGLING_TAG_REPAIR and data.hh_pair_from_row(GOOD).repaired == ""
    # the split keys the prompt as read, so the repair moved no pair between the splits of the published runs
    assert pair.prompt_key != data.hh_pair_from_row(GOOD).prompt_key
    assert pair.prompt_key == data.PreferencePair(tuple(data.parse_hh_transcript(row["chosen"], repair=False)[:-1]),
                                                  "", "", "hh-rlhf").prompt_key
    assert data.parse_hh_transcript("\n\nHuman: Hi\n\nAssistant: Hello\n\nHuman  \n\nAssistant\n\n") == [
        {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]


@pytest.mark.parametrize("chosen_end, reason", [
    (hh(("Assistant", "")) + "\n\nHuman", "empty response"),  # nothing but the tag was left of the reply
    ("\n\nAssistant", "end with an assistant"),  # cut after the word: no reply at all
])
def test_a_reply_the_repair_leaves_empty_drops_the_row(chosen_end, reason):
    with pytest.raises(MalformedRow, match=reason):
        data.hh_pair_from_row({"chosen": hh(("Human", "Hi")) + chosen_end,
                               "rejected": hh(("Human", "Hi"), ("Assistant", "b"))})


def test_the_repaired_pairs_are_counted(monkeypatch):
    dangling = {"chosen": hh(("Human", "Hey"), ("Assistant", "Hello!")) + "\n\nHuman",
                "rejected": hh(("Human", "Hey"), ("Assistant", "No."))}
    pairs, dropped = data.pairs_from_rows([GOOD, dangling, {"chosen": GOOD["chosen"]}], data.hh_pair_from_row)
    monkeypatch.setattr(data, "load_hh_rlhf", lambda: (pairs, dropped))
    cfg = config.with_overrides(config.DataConfig(), n_validation=1, max_train_pairs=0)
    d = data.load_preference_data(cfg, source="offline")
    assert (d.n_repaired, d.repair_reasons) == (1, {data.DANGLING_TAG_REPAIR: 1})  # before the cap of 0 pairs
    assert (d.n_dropped, d.drop_reasons) == (1, {"missing field 'rejected'": 1})


def test_no_turn_of_the_offline_data_keeps_a_speaker_tag():
    """7 rows of the shipped files have a dangling "Human" tag; all 7 are repaired, kept and counted."""
    cfg = config.with_overrides(config.get_profile("cpu").data, max_train_pairs=None)
    d = data.load_preference_data(cfg, source="offline")
    pairs = d.train + d.development + d.validation
    assert [t for p in pairs for t in texts_of(p) if SPEAKER_TAG.search(t)] == []
    assert (d.n_repaired, d.repair_reasons) == (7, {data.DANGLING_TAG_REPAIR: 7}) and d.n_dropped == 64
    assert sum(bool(p.repaired) for p in pairs) == 7


def test_not_json_lines_names_file_and_line(tmp_path):
    path = tmp_path / "broken.jsonl.gz"
    with gzip.open(path, "wt") as f:
        f.write(json.dumps(GOOD) + "\n" + "{not json\n")
    with pytest.raises(data.DataFileError, match=r"broken.jsonl.gz, line 2: not valid JSON"):
        data.read_jsonl(path)


def test_truncated_gzip_names_the_file_and_what_to_do(tmp_path):
    whole = gzip.compress(b"".join(b'{"chosen": "a", "rejected": "b"}\n' for _ in range(200)))
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(whole[: len(whole) // 2])  # an interrupted download
    with pytest.raises(data.DataFileError, match=r"cut.jsonl.gz: the gzip file ends early .* download or copy it again"):
        data.read_jsonl(path)


def test_missing_offline_data_says_where_to_put_it(tmp_path):
    with pytest.raises(data.DataFileError, match="ALIGNLIB_HH_RLHF_DIR"):
        data.load_hh_rlhf(tmp_path)


def test_the_offline_data_ships_in_the_repository(monkeypatch):
    """A clone works with nothing beside it: the default folder is the repository's own data/hh-rlhf/."""
    monkeypatch.delenv(data.HH_DIR_ENV, raising=False)
    here = data.hh_rlhf_dir()
    assert here == Path(data.__file__).resolve().parent.parent / "data" / "hh-rlhf"
    assert all((here / name).exists() for name in data.HH_FILES)
    assert "MIT" in (here / "README.md").read_text()
    assert all(sha in (here / "README.md").read_text() for sha in data.HH_SHA256.values())


def test_the_data_folder_setting_wins(monkeypatch, tmp_path):
    monkeypatch.setenv(data.HH_DIR_ENV, str(tmp_path))
    assert data.hh_rlhf_dir() == tmp_path


def test_a_changed_data_file_is_refused_with_what_to_do(monkeypatch, tmp_path):
    for name in data.HH_FILES:  # a Git LFS pointer instead of the file, as a clone without git-lfs gets
        (tmp_path / name).write_text("version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 875191\n")
    with pytest.raises(data.DataFileError, match=r"helpful-base_test.jsonl.gz is not the published file .* Git LFS"):
        data.load_hh_rlhf(tmp_path)


def test_helpsteer2_nemo_turns_become_chat_messages():
    rows = [{"prompt": "What is 2+2?\n<extra_id_1>Assistant\n4\n<extra_id_1>User\nAnd 3+3?",
             "chosen": "6", "rejected": "7", "chosen_score": 4.0, "rejected_score": 1.0},
            {"prompt": "Hi", "chosen": "Hello", "rejected": "Hello"}]
    pairs, dropped = data.pairs_from_rows(rows, data.helpsteer2_pair_from_row)
    assert pairs[0].prompt == ({"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4"},
                               {"role": "user", "content": "And 3+3?"})
    assert (pairs[0].chosen, pairs[0].rejected, pairs[0].source) == ("6", "7", "helpsteer2")
    assert dropped == {"chosen and rejected are identical": 1}


def make_pairs(n, shared_every=5):
    """n pairs; every `shared_every`-th pair reuses the previous prompt."""
    out = []
    for i in range(n):
        q = f"question {i - 1 if i % shared_every == 1 else i}"
        out.append(PreferencePair(({"role": "user", "content": q},), f"good {i}", f"bad {i}", "test"))
    return out


def test_split_is_deterministic_exact_and_keeps_prompts_on_one_side():
    pairs = make_pairs(200)
    train, val = data.split_by_prompt(pairs, 37, seed=0)
    train2, val2 = data.split_by_prompt(pairs, 37, seed=0)
    assert (train, val) == (train2, val2)
    assert len(val) == 37 and len(train) == 163
    assert not {p.prompt_key for p in train} & {p.prompt_key for p in val}
    assert sorted(p.chosen for p in train + val) == sorted(p.chosen for p in pairs)
    assert data.split_by_prompt(pairs, 37, seed=1)[1] != val


def test_offline_data_has_373_validation_pairs():

    d = data.load_preference_data(config.get_profile("full").data, source="offline")
    assert len(d.validation) == 373
    assert len(d.train) + len(d.validation) + d.n_dropped == 6240
    assert d.n_dropped == sum(d.drop_reasons.values()) > 0


def test_the_development_pairs_are_carved_from_train_before_the_cap():
    """cpu: 400 development pairs whose prompts appear in neither the training pairs nor validation."""

    cfg = config.get_profile("cpu").data
    d = data.load_preference_data(cfg, source="offline")
    assert len(d.development) == 400 and len(d.train) == cfg.max_train_pairs and len(d.validation) == 373
    dev = {p.prompt_key for p in d.development}
    assert not dev & {p.prompt_key for p in d.train} and not dev & {p.prompt_key for p in d.validation}
    uncut = data.load_preference_data(config.with_overrides(cfg, max_train_pairs=None), source="offline")
    assert uncut.development == d.development and uncut.train[:cfg.max_train_pairs] == d.train
    assert len(uncut.train) + 400 + 373 + uncut.n_dropped == 6240
    assert data.load_preference_data(config.get_profile("full").data, source="offline").development == []


def test_chat_formatting(tokenizer):
    messages = [{"role": "user", "content": "Why is the sky blue?"}]
    prompt = data.policy_prompt_text(tokenizer, messages)
    assert prompt.endswith("<|im_start|>user\nWhy is the sky blue?<|im_end|>\n<|im_start|>assistant\n")
    full = tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": "Rayleigh."}], tokenize=False)
    assert full == prompt + "Rayleigh." + data.response_suffix(tokenizer) == prompt + "Rayleigh.<|im_end|>\n"
    ids, truncated = data.encode_prompt_response(tokenizer, messages, "Rayleigh.", 10**6)
    assert tokenizer.decode(ids) == full and not truncated  # the reward model reads exactly the chat template


def test_tokenizer_pads_with_eos_on_the_left(tokenizer):
    assert tokenizer.pad_token == tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.padding_side == "left" and tokenizer.truncation_side == "left"


def test_over_long_pairs_are_left_truncated_and_counted(tokenizer):
    long_prompt = ({"role": "user", "content": "word " * 300},)
    pair = PreferencePair(long_prompt, "short reply", "a somewhat longer reply here", "test")
    enc = data.encode_pair(tokenizer, pair, max_length=64)
    assert enc.truncated
    assert len(enc.prompt + enc.chosen) <= 64 and len(enc.prompt + enc.rejected) == 64  # the longer view fills the budget
    full = data.encode_pair(tokenizer, pair, max_length=10**6)
    assert enc.rejected == full.rejected and enc.chosen == full.chosen  # replies kept whole
    assert enc.prompt == full.prompt[-len(enc.prompt):]  # the prompt lost its oldest tokens
    short = data.encode_pair(tokenizer, PreferencePair(({"role": "user", "content": "Hi"},), "a", "b", "t"), 64)
    assert not short.truncated


def test_left_pad():
    ids, mask = data.left_pad([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_bucketed_batches_cover_every_example_once():
    lengths = [(i * 37) % 101 + 1 for i in range(250)]
    batches = data.length_bucketed_batches(lengths, batch_size=8, seed=3)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(250))
    assert data.length_bucketed_batches(lengths, 8, seed=3) == batches
    assert data.length_bucketed_batches(lengths, 8, seed=4) != batches
    idx = list(range(250))
    plain = [idx[i:i + 8] for i in range(0, 250, 8)]
    assert data.padding_efficiency(lengths, batches) > data.padding_efficiency(lengths, plain) + 0.2


def test_padding_efficiency_by_hand():
    # batch [0, 1]: lengths 2 and 4 -> 6 real of 8 processed; batch [2]: 3 of 3. Total 9 / 11.
    assert data.padding_efficiency([2, 4, 3], [[0, 1], [2]]) == pytest.approx(9 / 11)


def test_token_lengths_count_what_encode_pair_encodes(tokenizer):
    pairs = [data.PreferencePair(({"role": "user", "content": "Hi"},), "Hello there.", "No.", "t"),
             data.PreferencePair(({"role": "user", "content": "Why?"}, {"role": "assistant", "content": "Sky."},
                                  {"role": "user", "content": "Blue?"}), "Rayleigh scattering.", "", "t")]
    lengths = data.token_lengths(tokenizer, pairs)
    for row, pair in zip(lengths.itertuples(), pairs):
        e = data.encode_pair(tokenizer, pair, max_length=10**9)
        assert (row.prompt, row.chosen, row.rejected, row.turns) == (len(e.prompt), len(e.chosen), len(e.rejected),
                                                                      len(pair.prompt))
        assert row.pair_packed == len(e.prompt) + len(e.chosen) + len(e.rejected)
        assert row.longest_view == len(e.prompt) + max(len(e.chosen), len(e.rejected))
    assert data.token_lengths(tokenizer, []).empty
