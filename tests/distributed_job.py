"""Both training loops on tiny random models, for tests/test_distributed.py.

    ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2 tests/distributed_job.py OUT_DIR [KILL_AT]
    python tests/distributed_job.py OUT_DIR          (one process, no launcher)

(`accelerate launch --cpu` starts a single process unless MPI is installed; `--multi_gpu` starts the
processes with torchrun, and ACCELERATE_USE_CPU=true makes them a gloo group of CPU processes.)

Trains a reward model and a REINFORCE policy with the same global batch whatever the number of
processes (REINFORCE: 4 prompts per iteration, split over the processes; RM: 4 pairs per step, as
2 x 2 accumulated micro-batches on one process or 2 x 1 per process on two), then the main process
writes OUT_DIR/result.pt: both histories and the final trainable weights. REINFORCE checkpoints
every iteration in OUT_DIR/rl; with KILL_AT, the main process sends itself SIGKILL right after
writing checkpoint KILL_AT (an interruption at a known point).
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from transformers import LlamaForCausalLM  # noqa: E402

from alignlib import config, models, reinforce_loop, reward_model_loop  # noqa: E402
from alignlib.data import PreferencePair  # noqa: E402
from conftest import die_after_checkpoint, tiny_base, tiny_config  # noqa: E402

PROMPTS = [[{"role": "user", "content": w}] for w in ("cats", "dogs", "rain", "tea", "sun", "snow", "moon", "sea")]



def trainable_state(model) -> dict:
    """Weights that training changes: the trainable parameters (LoRA + head, or everything)."""
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}

def reward_fn(prompts, texts):
    """Deterministic: more "e"s is better, and each prompt has its own offset (RLOO must cancel it)."""
    return torch.tensor([t.count("e") + 0.1 * len(t) + len(p[0]["content"]) for p, t in zip(prompts, texts)],
                        dtype=torch.float32)


def train_rm(tokenizer, processes: int) -> tuple[dict, dict]:
    from peft import get_peft_model

    cfg = config.with_overrides(config.get_profile("smoke").rm_scalar, lr=5e-3, batch_size=2, max_steps=None,
                                grad_accum=2 // processes, epochs=1, warmup_steps=1, lora_dropout=0.0)
    model = get_peft_model(tiny_base(tokenizer, seed=0), models.lora_config(cfg))
    pairs = [PreferencePair(({"role": "user", "content": f"Question {i}?"},), f"A helpful answer {i}." * (1 + i % 3),
                            "no", "t") for i in range(16)]
    history = reward_model_loop.train_reward_model(model, tokenizer, pairs, cfg, 64, progress=False)
    return history, trainable_state(model)


def train_rl(tokenizer, baseline: str, ckpt_dir=None) -> tuple[dict, dict]:
    torch.manual_seed(0)
    policy, ref = LlamaForCausalLM(tiny_config(tokenizer)), None
    k, beta = (2, 0.0) if baseline == "rloo" else (1, 0.5)
    if beta:
        ref = LlamaForCausalLM(tiny_config(tokenizer)).eval()
        ref.load_state_dict(policy.state_dict())
    cfg = config.with_overrides(config.get_profile("smoke").reinforce, iterations=4, prompts_per_iter=4,
                                samples_per_prompt=k, baseline=baseline, kl_beta=beta, max_new_tokens=6, lr=3e-3,
                                temperature=0.9, top_p=0.95)
    history = reinforce_loop.train_reinforce(policy, tokenizer, reward_fn, PROMPTS, cfg, ref_policy=ref,
                                             progress=False, checkpoint_dir=ckpt_dir, checkpoint_every=1)
    return history, trainable_state(policy)


def main(out_dir: Path, kill_at: int | None = None) -> dict:
    from accelerate import Accelerator

    state = Accelerator()
    if kill_at is not None and state.is_main_process:
        die_after_checkpoint(kill_at)
    tokenizer = models.load_tokenizer()
    result = {"processes": state.num_processes, "rm": train_rm(tokenizer, state.num_processes),
              "ema_kl": train_rl(tokenizer, "ema"), "rloo": train_rl(tokenizer, "rloo", out_dir / "rl")}
    if state.is_main_process:
        torch.save(result, out_dir / "result.pt")
    return result


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else None)
