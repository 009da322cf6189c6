"""Where the loops send each step's metrics besides their history: the experiment tracker that
$ALIGNLIB_TRACKER names (none by default), and <checkpoint_dir>/train_log.jsonl."""

import json

import pytest
import torch
from accelerate import tracking as accelerate_tracking
from accelerate.utils import LoggerType

from alignlib import config, reinforce_loop, reward_model_loop, tracking
from test_reward import toy_pairs

PROMPTS = [[{"role": "user", "content": f"Tell me about {w}"}] for w in ("cats", "dogs", "rain", "tea")]


def smoke_rl(**changes):
    settings = dict(iterations=2, prompts_per_iter=2, max_new_tokens=3, lr=1e-3, amp="none") | changes
    return config.with_overrides(config.get_profile("smoke").reinforce, **settings)


def smoke_rm(**changes):
    settings = dict(batch_size=4, max_steps=None, grad_accum=1, amp="none") | changes
    return config.with_overrides(config.get_profile("smoke").rm_scalar, **settings)


def reward(prompts, texts):
    return torch.tensor([t.count("e") / 10 for t in texts], dtype=torch.float32)


class Interrupted(Exception):
    pass


class RecordingTracker(accelerate_tracking.GeneralTracker):
    """A tracker that keeps what the loop sends it (registered under its name, as a package's would be)."""

    name = "alignlib_recording"
    requires_logging_directory = True
    runs = []

    def __init__(self, run_name, logging_dir, **kwargs):
        super().__init__()
        self.run_name, self.logging_dir = run_name, logging_dir
        self.config, self.logged, self.finished = None, [], False
        RecordingTracker.runs.append(self)

    @property
    def tracker(self):
        return self

    def store_init_configuration(self, values):
        self.config = values

    def log(self, values, step=None, **kwargs):
        self.logged.append((step, values))

    def finish(self):
        self.finished = True


@pytest.fixture
def recording(monkeypatch, tmp_path):
    """$ALIGNLIB_TRACKER names the recording tracker; yields its runs."""
    monkeypatch.setitem(accelerate_tracking.LOGGER_TYPE_TO_CLASS, RecordingTracker.name, RecordingTracker)
    monkeypatch.setenv(tracking.TRACKER_ENV, RecordingTracker.name)
    monkeypatch.setenv(tracking.TRACKER_DIR_ENV, str(tmp_path / "trackers"))
    monkeypatch.setattr(RecordingTracker, "runs", [])
    return RecordingTracker.runs


# ------------------------------------------------------------------------------ the setting


def test_no_tracker_unless_asked(monkeypatch):
    monkeypatch.delenv(tracking.TRACKER_ENV, raising=False)
    assert tracking.tracker_from_env() == {}
    monkeypatch.setenv(tracking.TRACKER_ENV, "None")
    assert tracking.tracker_from_env() == {}


def test_an_unknown_tracker_is_refused_with_the_setting_named(monkeypatch):
    monkeypatch.setenv(tracking.TRACKER_ENV, "tensorbored")
    with pytest.raises(ValueError, match=r"ALIGNLIB_TRACKER='tensorbored' is not a tracker.*tensorboard.*wandb"):
        tracking.tracker_from_env()


def test_a_tracker_not_installed_is_refused_with_how_to_install_it(monkeypatch):
    monkeypatch.setattr(accelerate_tracking, "get_available_trackers", lambda: [])
    monkeypatch.setenv(tracking.TRACKER_ENV, "tensorboard")
    with pytest.raises(ValueError, match="ALIGNLIB_TRACKER='tensorboard' needs .* pip install tensorboard"):
        tracking.tracker_from_env()


def test_an_installed_tracker_writes_under_the_tracker_dir(monkeypatch, tmp_path):
    monkeypatch.setattr(accelerate_tracking, "get_available_trackers", lambda: [LoggerType.TENSORBOARD])
    monkeypatch.setenv(tracking.TRACKER_ENV, "TensorBoard")
    monkeypatch.delenv(tracking.TRACKER_DIR_ENV, raising=False)
    assert tracking.tracker_from_env() == {"log_with": "tensorboard", "project_dir": tracking.DEFAULT_TRACKER_DIR}
    monkeypatch.setenv(tracking.TRACKER_DIR_ENV, str(tmp_path))
    assert tracking.tracker_from_env()["project_dir"] == str(tmp_path)


# ------------------------------------------------------------------------------ in the loops


def test_without_the_setting_the_accelerator_gets_no_tracker(tiny_policy, tokenizer, monkeypatch):
    monkeypatch.delenv(tracking.TRACKER_ENV, raising=False)
    made, original = [], reinforce_loop.Accelerator

    def accelerator(**kwargs):
        made.append(kwargs)
        return original(**kwargs)

    monkeypatch.setattr(reinforce_loop, "Accelerator", accelerator)
    reinforce_loop.train_reinforce(tiny_policy, tokenizer, reward, PROMPTS, smoke_rl(iterations=1), progress=False)
    assert made == [{"device_placement": False}]


@pytest.mark.parametrize("setting", ["tensorbored", "tensorboard"])
def test_a_bad_tracker_stops_the_run_before_training(tiny_policy, tiny_rm, tokenizer, monkeypatch, setting):
    monkeypatch.setattr(accelerate_tracking, "get_available_trackers", lambda: [])  # as if nothing was installed
    monkeypatch.setenv(tracking.TRACKER_ENV, setting)
    scored = []
    with pytest.raises(ValueError, match="ALIGNLIB_TRACKER"):
        reinforce_loop.train_reinforce(tiny_policy, tokenizer, lambda p, t: scored.append(t) or reward(p, t), PROMPTS,
                                       smoke_rl(), progress=False)
    assert scored == []  # not one iteration
    model = tiny_rm()
    before = {n: p.clone() for n, p in model.named_parameters() if p.requires_grad}
    with pytest.raises(ValueError, match="ALIGNLIB_TRACKER"):
        reward_model_loop.train_reward_model(model, tokenizer, toy_pairs(), smoke_rm(), 128, progress=False)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters() if p.requires_grad)


def assert_tracked(run, history, project, tmp_path):
    """One log call per step, at the history's step, with its metrics (None: not measured, not sent)."""
    assert run.run_name == project and run.logging_dir == str(tmp_path / "trackers") and run.finished
    assert [step for step, _ in run.logged] == history["step"]
    for i, (_, values) in enumerate(run.logged):
        assert values == {k: v[i] for k, v in history.items() if k != "step" and v[i] is not None}


def test_the_reinforce_loop_logs_each_iteration_to_the_tracker(tiny_policy, tokenizer, recording, tmp_path):
    cfg = smoke_rl(iterations=3, kl_log_every=2)
    history = reinforce_loop.train_reinforce(tiny_policy, tokenizer, reward, PROMPTS, cfg, ref_policy=tiny_policy,
                                             progress=False, run_name="reinforce_ema")
    (run,) = recording
    assert_tracked(run, history, "reinforce_ema", tmp_path)
    assert "kl/to_sft" in run.logged[0][1] and "kl/to_sft" not in run.logged[1][1]  # not measured at iteration 1
    assert run.config["iterations"] == 3 and run.config["baseline"] == "ema"


def test_the_rm_loop_logs_each_step_to_the_tracker(tiny_rm, tokenizer, recording, tmp_path):
    history = reward_model_loop.train_reward_model(tiny_rm(), tokenizer, toy_pairs(), smoke_rm(), 128, progress=False)
    (run,) = recording
    assert_tracked(run, history, "reward_model", tmp_path)
    assert history["step"] == [1, 2, 3] and set(run.logged[0][1]) == set(reward_model_loop.HISTORY_KEYS) - {"step"}
    assert run.config["batch_size"] == 4 and run.config["max_length"] == 128
    assert all(isinstance(v, (bool, int, float, str)) for v in run.config.values())  # e.g. LoRA's tuple as text


# ------------------------------------------------------------------------------ the train log


def train_log(directory) -> list[dict]:
    return [json.loads(line) for line in (directory / tracking.TRAIN_LOG).read_text().splitlines()]


def test_a_resumed_run_continues_the_train_log_without_repeating_or_losing_a_step(tiny_policy, tokenizer, tmp_path):
    cfg, calls = smoke_rl(iterations=5), []

    def dies_at_the_fourth_batch(prompts, texts):
        calls.append(1)
        if len(calls) == 4:
            raise Interrupted
        return reward(prompts, texts)

    with pytest.raises(Interrupted):  # checkpoint after 2 iterations; iteration 3 logged, then lost
        reinforce_loop.train_reinforce(tiny_policy, tokenizer, dies_at_the_fourth_batch, PROMPTS, cfg, progress=False,
                                       checkpoint_dir=tmp_path, checkpoint_every=2)
    assert [row["step"] for row in train_log(tmp_path)] == [1, 2, 3]
    history = reinforce_loop.train_reinforce(tiny_policy, tokenizer, reward, PROMPTS, cfg, progress=False,
                                             checkpoint_dir=tmp_path, checkpoint_every=2)
    rows = train_log(tmp_path)
    assert [row["step"] for row in rows] == [1, 2, 3, 4, 5]
    assert rows == [dict(zip(history, values)) for values in zip(*history.values())]  # the history, row by row


def test_the_rm_loop_writes_one_line_per_step(tiny_rm, tokenizer, tmp_path):
    history = reward_model_loop.train_reward_model(tiny_rm(), tokenizer, toy_pairs(), smoke_rm(), 128, progress=False,
                                                   checkpoint_dir=tmp_path / "state", checkpoint_every=2)
    assert train_log(tmp_path / "state") == [dict(zip(history, values)) for values in zip(*history.values())]
