"""The plumbing both training loops call, each part by hand: which rows each process takes
(`distributed`), resuming and saving (`checkpoint`), and the guards of a step (`precision`)."""

import contextlib
from types import SimpleNamespace

import pytest
import torch
from accelerate import Accelerator

from alignlib import checkpoint, distributed, precision

# ------------------------------------------------------------------------------ process shares


def test_each_process_takes_its_contiguous_share_and_the_shares_make_the_whole():
    rows = list(range(6))
    assert [distributed.share(rows, rank, 3) for rank in range(3)] == [[0, 1], [2, 3], [4, 5]]
    assert distributed.share(rows, 0, 1) == rows  # one process: everything
    gathered = torch.arange(8.0)  # 2 processes x 4 rows, in rank order: each takes its own back
    assert distributed.share(gathered, 1, 2).tolist() == [4.0, 5.0, 6.0, 7.0]
    assert torch.equal(torch.cat([distributed.share(gathered, r, 2) for r in range(2)]), gathered)


def test_micro_batches_are_dealt_round_robin():
    batches = ["a", "b", "c", "d", "e", "f"]
    assert distributed.dealt(batches, 0, 2) == ["a", "c", "e"] and distributed.dealt(batches, 1, 2) == ["b", "d", "f"]
    assert distributed.dealt(batches, 0, 1) == batches


def test_one_process_gathers_reduces_and_syncs_its_own_values():
    accelerator, cpu = Accelerator(cpu=True), torch.device("cpu")
    assert accelerator.num_processes == 1
    rows = torch.tensor([1.5, -2.0, 3.0])
    assert torch.equal(distributed.gather(accelerator, rows, cpu), rows)
    assert distributed.mean(accelerator, torch.tensor(2.5, requires_grad=True)) == 2.5
    sums = distributed.summed(accelerator, {"loss": 1.25, "right": 3, "n": 4}, cpu)
    assert sums == {"loss": 1.25, "right": 3.0, "n": 4.0} and list(sums) == ["loss", "right", "n"]
    model = torch.nn.Linear(2, 1)
    for last in (False, True):
        with distributed.accumulating(accelerator, model, last=last):
            model(torch.ones(1, 2)).sum().backward()
    assert torch.equal(model.weight.grad, torch.full((1, 2), 2.0))  # both micro-batches accumulated


class TwoProcesses:
    """An Accelerator of rank 0 of two processes, the other holding `other`: accelerate's `reduce` ("sum" or
    "mean", default "mean") and `no_sync`, recorded. What only several processes see, seen on one."""

    def __init__(self, other: torch.Tensor):
        self.other, self.unsynced = other, []

    def reduce(self, tensor, reduction="mean"):
        both = tensor + self.other.to(tensor.dtype)
        return {"sum": both, "mean": both / 2}[reduction]  # another name: KeyError, as accelerate refuses it

    def no_sync(self, model):
        self.unsynced.append(model)
        return contextlib.nullcontext()


def test_sums_are_summed_over_the_processes_in_float64_and_micro_batches_sync_only_at_the_last():
    two = TwoProcesses(torch.tensor([0.5, 10.0, 1e-12], dtype=torch.float64))
    assert distributed.summed(two, {"loss": 1.25, "right": 3, "tiny": 1.0}, torch.device("cpu")) == \
        {"loss": 1.75, "right": 13.0, "tiny": 1.0 + 1e-12}  # 1 + 1e-12 is lost in float32
    model = torch.nn.Linear(2, 1)
    with distributed.accumulating(two, model, last=False):
        pass
    assert two.unsynced == [model]  # an earlier micro-batch accumulates locally
    with distributed.accumulating(two, model, last=True):
        pass
    assert two.unsynced == [model]  # the last one syncs: DDP averages the gradients then
    assert distributed.mean(TwoProcesses(torch.tensor(3.5)), torch.tensor(3.0)) == 3.25


# ------------------------------------------------------------------------------ resuming and saving


def test_checkpoints_are_due_every_n_steps_and_after_the_last(tmp_path):
    assert [s for s in range(1, 8) if checkpoint.due(tmp_path, s, 3, 7)] == [3, 6, 7]
    assert [s for s in range(1, 5) if checkpoint.due(tmp_path, s, 50, 4)] == [4]
    assert not any(checkpoint.due(None, s, 1, 3) for s in range(1, 4))  # no directory: never


def test_save_if_due_writes_from_the_main_process_only_and_waits_for_all(tmp_path):
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.AdamW(model.parameters())
    waits = []
    main, other = (SimpleNamespace(is_main_process=m, wait_for_everyone=lambda: waits.append(1)) for m in (True, False))
    checkpoint.save_if_due(tmp_path / "a", 2, 3, 4, {}, model, opt, {}, main)  # not due
    assert not (tmp_path / "a").exists() and waits == []
    checkpoint.save_if_due(tmp_path / "b", 3, 3, 4, {}, model, opt, {"x": 1}, other)  # due, another process
    assert not (tmp_path / "b").exists() and waits == [1]
    checkpoint.save_if_due(tmp_path / "c", 4, 3, 4, {}, model, opt, {"x": 1}, main)  # due: the last step
    assert checkpoint.latest(tmp_path / "c").name == "step-0000004" and waits == [1, 1]


def test_resume_restores_the_state_the_loop_saved_and_says_so(tmp_path, capsys):
    def state():
        torch.manual_seed(0)
        model = torch.nn.Linear(2, 1)
        opt = torch.optim.AdamW(model.parameters(), lr=0.1)
        return model, opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (s + 1))

    assert checkpoint.resume(None, {}, *state()[:2], "training at step") == (0, {})
    assert checkpoint.resume(tmp_path, {}, *state()[:2], "training at step") == (0, {})  # nothing there yet
    assert capsys.readouterr().out == ""
    model, opt, sched = state()
    model(torch.ones(1, 2)).sum().backward()
    opt.step()
    sched.step()
    checkpoint.save(tmp_path, 1, {"lr": 0.1}, model, opt, {"history": [1.0], "scheduler": sched.state_dict()})
    fresh, fresh_opt, fresh_sched = state()
    step, extra = checkpoint.resume(tmp_path, {"lr": 0.1}, fresh, fresh_opt, "training at step", scheduler=fresh_sched)
    assert step == 1 and extra["history"] == [1.0]
    assert torch.equal(fresh.weight, model.weight) and fresh_sched.get_last_lr() == sched.get_last_lr() == [0.05]
    assert capsys.readouterr().out == f"[alignlib] resuming training at step 1 from {tmp_path}\n"
    with pytest.raises(checkpoint.CheckpointMismatch, match="lr differ"):
        checkpoint.resume(tmp_path, {"lr": 0.2}, *state()[:2], "training at step")


def test_fast_forward_skips_the_batches_already_trained():
    assert next(checkpoint.fast_forward(iter(range(10)), 3)) == 3
    assert next(checkpoint.fast_forward(iter(range(10)), 0)) == 0


# ------------------------------------------------------------------------------ the guards of a step


def test_non_finite_inputs_of_a_step_stop_it_and_name_it():
    precision.check_finite(torch.tensor([1.0, -2.0]), "reward", "at iteration 3")
    for bad in (float("nan"), float("inf")):
        with pytest.raises(FloatingPointError, match="^non-finite reward at iteration 3$"):
            precision.check_finite(torch.tensor([1.0, bad]), "reward", "at iteration 3")


def test_backward_takes_the_mean_over_accumulated_micro_batches_and_refuses_a_non_finite_loss():
    w = torch.tensor([2.0], requires_grad=True)
    off = precision.grad_scaler("none", torch.device("cpu"))
    precision.backward((3 * w).sum(), off, "loss", "at step 0", accumulated=2)
    assert w.grad.tolist() == [1.5]  # d(3w / 2)/dw
    with pytest.raises(FloatingPointError, match=r"^non-finite RM loss \(nan\) at step 4$"):
        precision.backward((w * float("nan")).sum(), off, "RM loss", "at step 4")
    assert w.grad.tolist() == [1.5]  # no backward pass of the NaN loss
    w.grad = None
    scaled = torch.amp.GradScaler("cpu", enabled=True, init_scale=8.0)  # fp16: the gradient is scaled
    precision.backward((3 * w).sum(), scaled, "loss", "at step 0")
    assert w.grad.tolist() == [24.0]


def test_optimizer_step_steps_clears_the_gradients_and_returns_the_norm():
    w = torch.nn.Parameter(torch.tensor([1.0, 1.0]))
    opt = torch.optim.SGD([w], lr=0.5)
    w.grad = torch.tensor([3.0, 4.0])
    norm = precision.optimizer_step(opt, precision.grad_scaler("none", torch.device("cpu")), [w], 1.0, "at step 0")
    assert norm == 5.0 and w.grad is None
    assert w.tolist() == pytest.approx([1.0 - 0.5 * 0.6, 1.0 - 0.5 * 0.8])  # clipped to norm 1, then stepped
    scaler, before = torch.amp.GradScaler("cpu", enabled=True), w.detach().clone()
    precision.backward(torch.sqrt(w[0] - before[0]) + w[1], scaler, "loss", "at step 1")  # finite loss, inf gradient
    assert torch.isinf(w.grad[0])  # an fp16 overflow: the step is skipped, the weights untouched
    assert precision.optimizer_step(opt, scaler, [w], 1.0, "at step 1") is None
    assert torch.equal(w.detach(), before) and w.grad is None
