"""A tiny training run for the resume test, run as a subprocess by tests/test_resume.py.

    python tests/resume_job.py rm|rl CHECKPOINT_DIR OUT_JSON [KILL_AT_STEP]

With KILL_AT_STEP, the process sends itself SIGKILL right after writing that checkpoint
(an interruption at a known point); the history of a finished run goes to OUT_JSON.
"""

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from alignlib import config, models, reinforce_loop, reward_model_loop  # noqa: E402
from alignlib.data import PreferencePair  # noqa: E402
from conftest import die_after_checkpoint, tiny_base, tiny_config  # noqa: E402

kind, ckpt_dir, out = sys.argv[1], sys.argv[2], sys.argv[3]
kill_at = int(sys.argv[4]) if len(sys.argv) > 4 else None

if kill_at is not None:
    die_after_checkpoint(kill_at)

tokenizer = models.load_tokenizer()
if kind == "rm":
    from peft import get_peft_model

    cfg = config.with_overrides(config.get_profile("smoke").rm_scalar, lr=5e-3, batch_size=2, max_steps=None,
                                epochs=2, warmup_steps=1, lora_dropout=0.3)
    model = get_peft_model(tiny_base(tokenizer, seed=0), models.lora_config(cfg))
    pairs = [PreferencePair(({"role": "user", "content": f"Question {i}?"},), f"A helpful answer {i}.", "no", "t")
             for i in range(8)]
    history = reward_model_loop.train_reward_model(model, tokenizer, pairs, cfg, 64, progress=False,
                                        checkpoint_dir=ckpt_dir, checkpoint_every=2)
else:
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    policy = LlamaForCausalLM(tiny_config(tokenizer))
    cfg = config.with_overrides(config.get_profile("smoke").reinforce, iterations=6, prompts_per_iter=2,
                                max_new_tokens=4, lr=1e-3)
    prompts = [[{"role": "user", "content": w}] for w in ("cats", "dogs", "rain", "tea", "sun")]
    reward_fn = lambda p, texts: torch.tensor([t.count("e") + torch.rand(()).item() for t in texts])
    history = reinforce_loop.train_reinforce(policy, tokenizer, reward_fn, prompts, cfg, progress=False,
                                        checkpoint_dir=ckpt_dir, checkpoint_every=2)
history = {k: v for k, v in history.items() if not k.startswith("time/")}
Path(out).write_text(json.dumps(history))
