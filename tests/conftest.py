"""Shared fixtures: the real SmolLM2 tokenizer (offline copy) and tiny random Llama models."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch


@pytest.fixture(scope="session")
def tokenizer():
    from alignlib import models

    return models.load_tokenizer()


def tiny_config(tokenizer, num_labels=1):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                       pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                       bos_token_id=tokenizer.bos_token_id, num_labels=num_labels, tie_word_embeddings=True)


def tiny_base(tokenizer, num_labels=1, seed=0):
    """A tiny random Llama reward-model backbone with a visible (std 1) head, seeded."""
    from transformers import LlamaForSequenceClassification

    torch.manual_seed(seed)
    base = LlamaForSequenceClassification(tiny_config(tokenizer, num_labels))
    with torch.no_grad():
        base.score.weight.normal_(0, 1.0)
    return base


@pytest.fixture
def tiny_rm(tokenizer):
    """A factory of tiny randomly initialised reward models (LoRA-wrapped like the real one)."""
    from peft import get_peft_model

    from alignlib import config, models

    def make(num_labels=1, seed=0, **cfg_changes):
        base = tiny_base(tokenizer, num_labels, seed)
        cfg = config.with_overrides(config.get_profile("smoke").rm_scalar, num_labels=num_labels, **cfg_changes)
        model = get_peft_model(base, models.lora_config(cfg)).eval()
        model.alignlib_source = "tiny-random"
        return model

    return make


@pytest.fixture
def tiny_policy(tokenizer):
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(tiny_config(tokenizer)).eval()


def die_after_checkpoint(kill_at: int) -> None:
    """Make this process send itself SIGKILL right after writing checkpoint `kill_at` (an interruption at a
    known point), by wrapping `checkpoint.save`; used by the subprocess jobs of the resume tests."""
    import signal

    from alignlib import checkpoint

    original_save = checkpoint.save

    def save_then_die(directory, step, *args, **kwargs):
        path = original_save(directory, step, *args, **kwargs)
        if step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return path

    checkpoint.save = save_then_die
