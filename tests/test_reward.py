import math

import numpy as np
import pytest
import torch

from alignlib import config, data, losses, models, packing, reward_model_loop, scoring, stats
from alignlib.data import EncodedPair, PreferencePair

PROMPT = ({"role": "user", "content": "Why is the sky blue?"},)


def scorer(model, tokenizer):
    return scoring.RewardScorer(model, tokenizer, max_length=256, batch_size=4)


def test_positions_from_mask_by_hand():
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    assert data.positions_from_mask(mask).tolist() == [[0, 0, 0, 1], [0, 1, 2, 3]]


def test_packed_mask_by_hand():
    seg = torch.tensor([[0, 1, 1, 2, 3]])  # pad, P, P, C, R
    m = packing.packed_pair_mask(seg)[0, 0].int().tolist()
    assert m == [[1, 0, 0, 0, 0],   # padding attends to itself only
                 [0, 1, 0, 0, 0],   # prompt: causal
                 [0, 1, 1, 0, 0],
                 [0, 1, 1, 1, 0],   # chosen sees prompt and itself
                 [0, 1, 1, 0, 1]]   # rejected sees prompt and itself, never chosen


def test_pack_pairs_layout():
    packed = packing.pack_pairs([EncodedPair([1, 2], [3, 4, 5], [6], False), EncodedPair([1], [3], [6, 7], False)], 0)
    assert packed.input_ids.tolist() == [[1, 2, 3, 4, 5, 6], [0, 0, 1, 3, 6, 7]]
    assert packed.position_ids.tolist() == [[0, 1, 2, 3, 4, 2], [0, 0, 0, 1, 1, 2]]
    assert packed.chosen_end.tolist() == [4, 3] and packed.rejected_end.tolist() == [5, 5]
    assert packed.n_tokens == 10


def test_expected_score_by_hand():
    logits = torch.log(torch.tensor([[0.5, 0.5, 0.0 + 1e-30], [0.0 + 1e-30, 0.0 + 1e-30, 1.0]]))
    assert losses.expected_score(logits).tolist() == pytest.approx([1.5, 3.0])


def test_score_reads_the_end_of_the_response(tiny_rm, tokenizer):
    s = scorer(tiny_rm(), tokenizer).score([PROMPT, PROMPT], ["Rayleigh scattering.", "Rayleigh scattering!"])
    assert abs(s[0] - s[1]) > 1e-4  # the replies differ only in their last character


def test_pad_token_closing_every_turn_does_not_end_the_read(tiny_rm, tokenizer):
    """<|im_end|> is the pad token AND closes the system and user turns. A 'first pad token - 1'
    rule would read inside the prompt; alignlib reads at position -1 (left padding)."""
    ids, _ = data.encode_prompt_response(tokenizer, PROMPT, "Rayleigh scattering.", 256)
    prompt_len = len(data.encode_prompt_response(tokenizer, PROMPT, "", 256)[0]) - 2
    first_pad = ids.index(tokenizer.pad_token_id)
    assert first_pad - 1 < prompt_len  # the naive rule would pool inside the system prompt
    model = tiny_rm()
    sc = scorer(model, tokenizer)
    replies = ["Yes.", "No, because of Rayleigh scattering of short wavelengths."]
    scores = sc.score([PROMPT, PROMPT], replies)
    assert abs(scores[0] - scores[1]) > 1e-4


def test_alone_equals_in_left_padded_batch(tiny_rm, tokenizer):
    sc = scorer(tiny_rm(), tokenizer)
    alone = sc.score([PROMPT], ["Blue light scatters more."])
    other = ({"role": "user", "content": "A much longer question " * 10},)
    batch = sc.score([other, PROMPT], ["An answer that is long enough to force padding " * 3, "Blue light scatters more."])
    assert torch.allclose(alone[0], batch[1], atol=1e-5)


def test_our_pooling_matches_transformers_native_pooling(tiny_rm, tokenizer):
    model = tiny_rm()
    seqs = [data.encode_prompt_response(tokenizer, PROMPT, r, 256)[0] for r in ("Short.", "A longer reply here.")]
    ids, mask = data.left_pad(seqs, tokenizer.pad_token_id)
    with torch.no_grad():
        ours = scoring.sequence_logits(model, ids, mask)
        native = model(input_ids=ids, attention_mask=mask).logits
    assert torch.allclose(ours, native, atol=1e-5)


def test_packed_pair_scores_equal_separate_scores(tiny_rm, tokenizer):
    model = tiny_rm()
    pairs = [PreferencePair(PROMPT, "Rayleigh scattering.", "No idea.", "t"),
             PreferencePair(({"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                             {"role": "user", "content": "Name a colour"}), "Blue", "I would rather not say.", "t")]
    out = scoring.pair_rewards(model, tokenizer, pairs, max_length=256, batch_size=2)
    sc = scorer(model, tokenizer)
    sep_c = sc.score([p.prompt for p in pairs], [p.chosen for p in pairs]).numpy()
    sep_r = sc.score([p.prompt for p in pairs], [p.rejected for p in pairs]).numpy()
    np.testing.assert_allclose(out["chosen"], sep_c, atol=1e-5)
    np.testing.assert_allclose(out["rejected"], sep_r, atol=1e-5)


def test_pairwise_metrics_by_hand():
    m = stats.pairwise_metrics(np.array([2.0, 0.0, 1.0]), np.array([1.0, 1.0, 1.0]))
    assert m["val_accuracy"] == pytest.approx(1 / 3)  # a tie is not a win
    assert m["val_loss"] == pytest.approx((math.log1p(math.exp(-1)) + math.log1p(math.e) + math.log(2)) / 3)
    assert m["val_margin_mean"] == pytest.approx(0.0) and m["n_pairs"] == 3


def toy_pairs():
    good = ["Sure, here is a clear answer.", "Happy to help: step one, then two.", "Yes, it is Paris."]
    bad = ["no", "whatever", "idk"]
    return [PreferencePair(({"role": "user", "content": f"Question {i}?"},), good[i % 3], bad[i % 3], "t")
            for i in range(12)]


def test_training_is_reproducible_and_learns(tiny_rm, tokenizer):
    cfg = config.with_overrides(config.get_profile("smoke").rm_scalar, lr=5e-3, batch_size=4, max_steps=None,
                                epochs=6, warmup_steps=2)
    runs = []
    for _ in range(2):
        model = tiny_rm(seed=1)
        before = scoring.pair_rewards(model, tokenizer, toy_pairs(), 128)
        hist = reward_model_loop.train_reward_model(model, tokenizer, toy_pairs(), cfg, max_length=128, progress=False)
        after = scoring.pair_rewards(model, tokenizer, toy_pairs(), 128)
        runs.append((hist, before, after))
    (h1, b1, a1), (h2, _, _) = runs
    assert h1["train/loss"] == h2["train/loss"] and len(h1["step"]) == 18
    m_before = stats.pairwise_metrics(b1["chosen"], b1["rejected"])
    m_after = stats.pairwise_metrics(a1["chosen"], a1["rejected"])
    assert m_after["val_loss"] < m_before["val_loss"] - 0.1 and m_after["val_accuracy"] == 1.0


def test_grad_accumulation_counts_steps(tiny_rm, tokenizer):
    cfg = config.with_overrides(config.get_profile("smoke").rm_scalar, batch_size=2, grad_accum=3, max_steps=None)
    hist = reward_model_loop.train_reward_model(tiny_rm(), tokenizer, toy_pairs(), cfg, max_length=128, progress=False)
    assert len(hist["step"]) == 2  # 12 pairs / (2 pairs x 3 micro-batches)


def test_save_and_reload_gives_the_same_scores(tiny_rm, tokenizer, tmp_path):
    from peft import PeftModel

    from conftest import tiny_base

    model = tiny_rm(seed=3)
    with torch.no_grad():  # as if trained: non-zero LoRA updates
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    models.save_reward_model(model, tmp_path / "rm", max_length=128)
    base = tiny_base(tokenizer, seed=3)
    with torch.no_grad():
        base.score.weight.zero_()  # a different fresh head: the saved one must replace it
    reloaded = PeftModel.from_pretrained(base, tmp_path / "rm").eval()
    pairs = toy_pairs()[:3]
    a = scoring.pair_rewards(model, tokenizer, pairs, 128)
    b = scoring.pair_rewards(reloaded, tokenizer, pairs, 128)
    np.testing.assert_allclose(a["chosen"], b["chosen"], atol=1e-6)
    np.testing.assert_allclose(a["rejected"], b["rejected"], atol=1e-6)
    assert np.abs(a["chosen"]).max() > 0.1


def test_scorer_refuses_a_tokenizer_of_another_model(tokenizer):
    from transformers import LlamaConfig, LlamaForSequenceClassification

    other = LlamaForSequenceClassification(LlamaConfig(vocab_size=32000, hidden_size=16, intermediate_size=32,
                                                       num_hidden_layers=1, num_attention_heads=2,
                                                       num_key_value_heads=1, num_labels=1, pad_token_id=0))
    with pytest.raises(ValueError, match="vocabulary of 32000 tokens but the tokenizer has 49152"):
        scoring.RewardScorer(other, tokenizer)


def test_non_finite_loss_stops_training_and_names_the_step(tiny_rm, tokenizer):
    cfg = config.with_overrides(config.get_profile("smoke").rm_scalar, batch_size=4, max_steps=None)
    model = tiny_rm()
    _, head = models.body_and_head(model)
    head.register_forward_hook(lambda module, args, out: out * float("nan"))  # a head that scores NaN
    with pytest.raises(FloatingPointError, match=r"non-finite RM loss \(nan\) at step 0"):
        reward_model_loop.train_reward_model(model, tokenizer, toy_pairs(), cfg, max_length=128, progress=False)


@pytest.mark.parametrize("loss", ["expected_score", "prob_beats"])
def test_probabilistic_rm_training_is_reproducible(tiny_rm, tokenizer, loss):
    cfg = config.with_overrides(config.get_profile("smoke").rm_prob, loss=loss, lr=5e-3, batch_size=4,
                                max_steps=None, epochs=2, lora_dropout=0.3)
    h1, h2 = (reward_model_loop.train_reward_model(tiny_rm(num_labels=10, seed=1, lora_dropout=0.3), tokenizer, toy_pairs(),
                                        cfg, max_length=128, progress=False) for _ in range(2))
    assert h1["train/loss"] == h2["train/loss"] and len(h1["train/loss"]) == 6
    assert all(np.isfinite(h1["train/loss"]))


def test_a_different_seed_gives_a_different_run(tiny_rm, tokenizer):
    cfg = config.with_overrides(config.get_profile("smoke").rm_scalar, lr=5e-3, batch_size=4, max_steps=None,
                                lora_dropout=0.3)
    same = reward_model_loop.train_reward_model(tiny_rm(seed=1, lora_dropout=0.3), tokenizer, toy_pairs(), cfg, 128,
                                     progress=False)
    other = reward_model_loop.train_reward_model(tiny_rm(seed=1, lora_dropout=0.3), tokenizer, toy_pairs(),
                                      config.with_overrides(cfg, seed=7), 128, progress=False)
    assert same["train/loss"] != other["train/loss"]  # another batch order
