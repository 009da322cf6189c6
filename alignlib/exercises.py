"""Self-checking exercises of the notebooks.

How an exercise works. A notebook cell gives a function to fill in, whose body starts as
`raise NotImplementedError`, and the next cell checks it:

    def bradley_terry_loss(s_chosen, s_rejected):
        raise NotImplementedError  # your code here

    exercises.check_bradley_terry_loss(bradley_terry_loss)

`check_<name>(fn)` calls `fn` on small hand-made inputs (fixed seeds) and compares the results with hand
computations or with the reference in `alignlib.solutions`:
- right: it prints "✓ <name>: <what was verified>" and returns True;
- wrong: it raises `ExerciseError` saying what is wrong; the usual mistakes (a flipped sign, padding counted,
  a baseline that sees its own reward, ...) are recognised and named, anything else shows the inputs, the
  expected values and yours;
- not written yet (`fn` raises NotImplementedError): it prints "not done yet" and returns False, so a notebook
  still runs from top to bottom; `exercises.solution("<name>")` prints a reference solution. With the
  environment variable ALIGNLIB_SOLUTIONS=1 (the automated notebook runs) it checks the reference instead.

`EXERCISES` maps each name to (its check, its reference solution).
"""

from __future__ import annotations

import functools
import inspect
import os
from typing import Callable

import torch
import torch.nn.functional as F

from . import solutions as S

SOLUTIONS_ENV = "ALIGNLIB_SOLUTIONS"

EXERCISES: dict[str, tuple[Callable, Callable]] = {}


class ExerciseError(AssertionError):
    """A learner's function gives a wrong result; the message says what is wrong."""


def solution(name: str) -> None:
    """Print the source of the reference solution of exercise `name`."""
    if name not in EXERCISES:
        raise ValueError(f"no exercise {name!r}; the exercises are: {', '.join(EXERCISES)}")
    print(inspect.getsource(EXERCISES[name][1]))


def _exercise(reference: Callable, verified: str):
    """Register the decorated `check_<name>(fn)`, which raises ExerciseError on a wrong result, as the check of
    `reference.__name__`, wrapped to handle the not-done-yet case and to print the outcome."""
    name = reference.__name__

    def register(verify):
        def attempt(f):
            try:
                verify(f)
            except ExerciseError as e:  # name the exercise, and hide the checker's traceback
                raise ExerciseError(f"{name}: {e}") from None

        @functools.wraps(verify)
        def check(fn: Callable) -> bool:
            try:
                attempt(fn)
            except NotImplementedError:
                if os.environ.get(SOLUTIONS_ENV) != "1":
                    print(f"… {name}: not done yet (stuck? exercises.solution(\"{name}\") prints a solution)")
                    return False
                print(f"{name}: not done yet, and {SOLUTIONS_ENV}=1: checking the reference solution instead")
                attempt(reference)
            print(f"✓ {name}: {verified}")
            return True

        EXERCISES[name] = (check, reference)
        return check

    return register


# ------------------------------------------------------------------------------ comparing results


def _round(v):
    return [_round(x) for x in v] if isinstance(v, list) else (float(f"{v:.4g}") if isinstance(v, float) else v)


def _fmt(x) -> str:
    """A tensor or number, short (4 significant digits)."""
    if isinstance(x, torch.Tensor):
        return str(_round(x.detach().tolist()))
    return f"{x:.4g}" if isinstance(x, float) else repr(x)


def _tensor(got) -> torch.Tensor:
    """The learner's result as a detached tensor (a number is accepted for a scalar)."""
    if got is None:
        raise ExerciseError("the function returned None: did you forget `return`?")
    try:
        return torch.as_tensor(got).detach()
    except (TypeError, ValueError, RuntimeError):
        raise ExerciseError(f"expected a tensor, got a {type(got).__name__}: {got!r}") from None


def _close(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-4, atol: float = 1e-5) -> bool:
    return a.shape == b.shape and torch.allclose(a.double(), b.double(), rtol=rtol, atol=atol)


def _compare(got, expected: torch.Tensor, inputs: dict, wrong: list = (), nonfinite: str | None = None,
             what: str = "result") -> torch.Tensor:
    """Check the learner's `got` against `expected`; on a mismatch raise ExerciseError naming the mistake
    (`wrong`: (the result of a wrong answer, what is wrong), recognised when `got` matches it), else showing
    `inputs`, the expected values and `got`. `nonfinite`: the message for inf/nan where all is finite.
    Returns `got` as a detached tensor."""
    got = _tensor(got)
    expected = expected.detach()
    if got.shape != expected.shape:
        raise ExerciseError(f"the {what} has shape {tuple(got.shape)}, expected {tuple(expected.shape)}"
                            f"\n  inputs: {_inputs(inputs)}")
    if _close(got, expected):
        return got
    values = f"\n  expected {_fmt(expected)}, got {_fmt(got)}"
    if not torch.isfinite(got.double()).all() and torch.isfinite(expected.double()).all():
        message = nonfinite or f"the {what} has inf or nan values"
        raise ExerciseError(f"{message}{values}\n  inputs: {_inputs(inputs)}")
    for variant, message in wrong:
        if _close(got, variant):
            raise ExerciseError(message + values)
    raise ExerciseError(f"wrong {what}\n  inputs: {_inputs(inputs)}{values}")


def _inputs(inputs: dict) -> str:
    return ", ".join(f"{k}={_fmt(v)}" for k, v in inputs.items())


# ------------------------------------------------------------------------------ reward models


@_exercise(S.bradley_terry_loss, "-mean(log sigmoid(s_c - s_r)) on 4 pairs, finite for a gap of -200")
def check_bradley_terry_loss(fn):
    """Check `fn(s_chosen (n,), s_rejected (n,)) -> ()`, the mean Bradley-Terry loss."""
    s_c, s_r = torch.tensor([1.0, -0.5, 2.0, 0.3]), torch.tensor([0.2, 0.5, -1.0, 0.3])
    d = s_c - s_r
    ok = -F.logsigmoid(d).mean()
    _compare(fn(s_c.clone(), s_r.clone()), ok, dict(s_chosen=s_c, s_rejected=s_r), what="loss", wrong=[
        (-ok, "the sign is flipped: minimise -log sigmoid(s_c - s_r) (the negative log-likelihood of the "
              "preferences), not +log sigmoid"),
        (-F.logsigmoid(-d).mean(), "chosen and rejected are swapped: P(chosen preferred) = sigmoid(s_c - s_r)"),
        (ok * len(d), "you summed over the pairs: take the mean, so that the loss does not grow with the batch"),
    ])
    s_c, s_r = torch.tensor([0.0, 1.0]), torch.tensor([200.0, 0.0])  # a badly wrong pair: a gap of -200
    _compare(fn(s_c.clone(), s_r.clone()), -F.logsigmoid(s_c - s_r).mean(), dict(s_chosen=s_c, s_rejected=s_r),
             what="loss", nonfinite="use logsigmoid: log(sigmoid(d)) underflows, sigmoid(-200) rounds to 0 and "
                                    "log(0) = -inf; F.logsigmoid(d) computes it without underflow")


@_exercise(S.last_token_index, "the last real token of right-padded, left-padded and unpadded rows")
def check_last_token_index(fn):
    """Check `fn(attention_mask (B, T)) -> (B,)` long, the index of each row's last real token."""
    mask = torch.tensor([[1, 1, 1, 0, 0],   # right padding
                         [1, 1, 1, 1, 1],   # no padding
                         [0, 0, 1, 1, 1],   # left padding
                         [1, 1, 1, 1, 0],   # right padding
                         [0, 1, 1, 1, 1]])  # left padding
    ok = torch.tensor([2, 4, 4, 3, 4])
    got = _compare(fn(mask.clone()), ok, dict(attention_mask=mask), what="index", wrong=[
        (mask.sum(1), "mask.sum(1) is the number of real tokens, which under right padding is the index of the "
                      "first PAD token, one past the last real one (the classic pooling bug)"),
        (mask.sum(1) - 1, "mask.sum(1) - 1 is right only for right padding: with left padding the real tokens "
                          "end at T - 1; find the position of the last 1 in each row"),
        (torch.full_like(ok, 4), "T - 1 is the last real token only with left padding: under right padding "
                                 "the row ends with PAD tokens; find the position of the last 1 in each row"),
    ])
    if got.is_floating_point() or got.dtype == torch.bool:
        raise ExerciseError(f"indices must be an integer (long) tensor, to index with; got dtype {got.dtype}")


# ------------------------------------------------------------------------------ baselines


_FIRST = ("at the first batch (baseline None) there is no history: use the batch's mean as the baseline and as "
          "the new EMA (not 0)")
_UPDATED_FIRST = ("the baseline was updated with this batch before subtracting it, so each reply's own reward is in "
                  "its baseline (which biases the gradient): subtract the baseline of the PREVIOUS batches, then "
                  "update it")
_ALPHA = ("alpha is swapped: alpha is the weight kept on the OLD baseline, b_new = alpha * b + (1 - alpha) * "
          "mean(r); you put alpha on the new mean")


def _ema_result(got) -> tuple:
    if not (isinstance(got, (tuple, list)) and len(got) == 2):
        raise ExerciseError(f"return a pair (advantages, new baseline); got {got!r}")
    adv, new = got
    if new is None:
        raise ExerciseError("the new baseline is None: after any batch it is a number (the first batch: its mean)")
    return adv, torch.tensor(float(new))


@_exercise(S.ema_step, "advantages against the previous baseline (the batch mean at the first), then the EMA update")
def check_ema_step(fn):
    """Check `fn(rewards (n,), baseline float | None, alpha) -> ((n,) advantages, new baseline)` on two batches."""
    r, alpha = torch.tensor([1.0, 2.0, 3.0, 6.0]), 0.9  # first batch: mean 3
    inputs = dict(rewards=r, baseline=None, alpha=alpha)
    adv, new = _ema_result(fn(r.clone(), None, alpha))
    _compare(adv, torch.tensor([-2.0, -1.0, 0.0, 3.0]), inputs, what="advantages", wrong=[(r, _FIRST)])
    _compare(new, torch.tensor(3.0), inputs, what="new baseline",
             wrong=[(torch.tensor(0.3), _FIRST), (torch.tensor(2.7), _FIRST)])
    r = torch.tensor([5.0, 7.0])  # second batch: mean 6, previous baseline 3
    inputs = dict(rewards=r, baseline=3.0, alpha=alpha)
    adv, new = _ema_result(fn(r.clone(), 3.0, alpha))
    _compare(adv, torch.tensor([2.0, 4.0]), inputs, what="advantages", wrong=[
        (r - 3.3, _UPDATED_FIRST), (r - 5.7, _UPDATED_FIRST),
        (r - 6.0, "you subtracted this batch's mean: after the first batch the baseline is `baseline`, the EMA of "
                  "the previous batches"),
    ])
    _compare(new, torch.tensor(0.9 * 3.0 + 0.1 * 6.0), inputs, what="new baseline", wrong=[(torch.tensor(5.7), _ALPHA)])


_SELF = ("the baseline includes the reply itself: compare each reply with the mean of the OTHER k - 1 replies of its "
         "prompt (with k = 2 that is A = r1 - r2 for the first reply, r2 - r1 for the second)")
_BATCH = ("you used the whole batch: the baseline is per prompt, the mean of the other replies in the same row "
          "(replies to other prompts have other rewards)")


@_exercise(S.leave_one_out_advantages, "r_ij - mean of the other replies of prompt i, with k = 2 and k = 4")
def check_leave_one_out_advantages(fn):
    """Check `fn(rewards (n_prompts, k)) -> (n_prompts, k)` leave-one-out advantages, with k = 2 and k = 4."""
    two = torch.tensor([[1.0, 3.0], [2.0, 2.0], [0.0, 5.0]])
    four = torch.tensor([[1.0, 2.0, 3.0, 6.0], [0.0, 0.0, 4.0, 4.0]])
    two_ok = torch.tensor([[-2.0, 2.0], [0.0, 0.0], [-5.0, 5.0]])  # with k = 2: A = r1 - r2 and r2 - r1
    for r, ok in [(two, two_ok), (four, S.leave_one_out_advantages(four))]:
        k = r.shape[1]
        _compare(fn(r.clone()), ok, dict(rewards=r, k=k), what=f"advantages (k = {k})", wrong=[
            (r - r.mean(1, keepdim=True), _SELF),
            (r - r.mean(), _BATCH),
            (r - (r.sum() - r) / (r.numel() - 1), _BATCH),
        ])


# ------------------------------------------------------------------------------ REINFORCE


@_exercise(S.sequence_logprob, "sums up to and including the first eos, padding of any id left out, all T without eos")
def check_sequence_logprob(fn):
    """Check `fn(token_logp (B, T), tokens (B, T), eos_id) -> (B,)` the log-prob of each reply."""
    eos = 2
    tokens = torch.tensor([[5, 7, 2, 2, 2],   # ends at position 2, then padded with eos
                           [4, 2, 0, 0, 9],   # ends at position 1, then padded with other ids
                           [5, 6, 7, 8, 9]])  # no eos: cut off at the token cap
    token_logp = -3 * torch.rand(3, 5, generator=torch.Generator().manual_seed(0)) - 0.1
    keep = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1]])
    no_eos = torch.tensor([[1, 1, 0, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1]])
    ok = (token_logp * keep).sum(1)
    got = _tensor(fn(token_logp.clone(), tokens.clone(), eos))
    if got.shape == ok.shape and _close(got[:2], ok[:2]) and not _close(got[2:], ok[2:]):
        raise ExerciseError(f"a reply without eos (cut off at the token cap, row 3) counts all its T tokens"
                            f"\n  expected {_fmt(ok)}, got {_fmt(got)}")
    _compare(got, ok, dict(token_logp=token_logp, tokens=tokens, eos_id=eos), what="log-probs", wrong=[
        (token_logp.sum(1), "you summed over all T positions: the tokens after the first eos are padding, not "
                            "part of the reply"),
        ((token_logp * no_eos).sum(1), "the eos token itself was left out: it is part of the reply (the model "
                                       "must learn to end its turn), count it"),
        ((token_logp * (tokens != eos)).sum(1), "you dropped every eos id: count the tokens up to and including "
                                                "the FIRST eos, and nothing after it, whatever its id"),
    ])


_SIGN = ("the sign is flipped: the loss is -mean(A * log pi(y)), so that gradient descent raises log pi(y) of the "
         "replies with A > 0")


@_exercise(S.reinforce_loss, "-mean(A * log pi(y)), gradient -A/N to the log-probs and none to the advantages")
def check_reinforce_loss(fn):
    """Check `fn(seq_logp (N,), advantages (N,)) -> ()` the REINFORCE surrogate loss and its gradients."""
    logp = torch.tensor([-3.0, -1.5, -2.0, -4.0], requires_grad=True)
    adv = torch.tensor([1.0, -0.5, 0.25, 2.0], requires_grad=True)  # requires_grad: must not receive any
    inputs = dict(seq_logp=logp, advantages=adv)
    ok = -(adv * logp).mean().detach()
    loss = fn(logp, adv)
    _compare(loss, ok, inputs, what="loss", wrong=[
        (-ok, _SIGN),
        (ok * len(adv), "you summed over the replies: take the mean, so that the step does not grow with the batch"),
    ])
    if not (isinstance(loss, torch.Tensor) and loss.requires_grad):
        raise ExerciseError("the loss has no gradient: keep seq_logp attached (the policy's gradient flows "
                            "through the log-probs)")
    loss.backward()
    if adv.grad is not None and adv.grad.abs().sum() > 0:
        raise ExerciseError("gradient reaches the advantages: detach them (advantages.detach()); they weight each "
                            "reply's log-prob and are constants, not something to optimise")
    want = -adv.detach() / len(adv)
    if logp.grad is None or not _close(logp.grad, want):
        raise ExerciseError(f"wrong gradient to seq_logp: expected -A/N = {_fmt(want)}, got "
                            f"{None if logp.grad is None else _fmt(logp.grad)}")


@_exercise(S.score_function_gradients, "(r - b)(1[a=0] - p) per pull, on average p(1-p)(r_good - r_bad) over 200k")
def check_score_function_gradients(fn):
    """Check `fn(actions (n,), p_good, rewards (n,), baseline) -> (n,)` per-pull estimates of dJ/dlogit_0, then
    that they are unbiased over many pulls."""
    actions, p, b = torch.tensor([0, 1, 0, 1, 1]), 0.3, 0.5
    rewards = torch.tensor([1.0, 0.0, 0.5, 1.0, 0.0])
    is_good = (actions == 0).float()
    _compare(fn(actions.clone(), p, rewards.clone(), b), (rewards - b) * (is_good - p),
             dict(actions=actions, p_good=p, rewards=rewards, baseline=b), what="estimates", wrong=[
        ((rewards - b) * is_good, "the score of a softmax is dlog pi(a)/dlogit_0 = 1[a=0] - p, not 1[a=0]: "
                                  "without the -p the estimate is biased, its mean is not the gradient "
                                  "p(1-p)(r_good - r_bad)"),
        ((rewards + b) * (is_good - p), "the baseline was added: subtract it, (r - b)(1[a=0] - p)"),
    ])
    n, p, r_good, r_bad, b = 200_000, 0.4, 1.0, 0.2, 0.1
    actions = (torch.rand(n, generator=torch.Generator().manual_seed(0)) >= p).long()  # arm 0 with probability p
    rewards = torch.where(actions == 0, r_good, r_bad)
    mean = _tensor(fn(actions, p, rewards, b)).double().mean().item()
    true = p * (1 - p) * (r_good - r_bad)
    if abs(mean - true) > 0.005:
        raise ExerciseError(f"the estimates are biased: their mean over {n} pulls is {mean:.4f}, the true gradient "
                            f"p(1-p)(r_good - r_bad) is {true:.4f}; the score of a softmax is 1[a=0] - p")


@_exercise(S.kl_penalised_rewards, "r - beta * sum over the reply tokens of (logp - ref_logp)")
def check_kl_penalised_rewards(fn):
    """Check `fn(rewards (B,), logp (B, T), ref_logp (B, T), mask (B, T), beta) -> (B,)`."""
    g = torch.Generator().manual_seed(1)
    rewards = torch.tensor([1.0, 0.5, -0.2])
    logp, ref_logp = -2 * torch.rand(3, 4, generator=g), -2 * torch.rand(3, 4, generator=g)
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    beta, diff = 0.5, logp - ref_logp
    kl = (mask * diff).sum(1)
    mean_msg = ("you averaged over the tokens: the KL of a reply is the SUM over its tokens of log pi - log pi_ref "
                "(the log-ratio of the whole reply)")
    _compare(fn(rewards.clone(), logp.clone(), ref_logp.clone(), mask.clone(), beta), rewards - beta * kl,
             dict(rewards=rewards, logp=logp, ref_logp=ref_logp, mask=mask, beta=beta), what="rewards", wrong=[
        (rewards + beta * kl, "plus instead of minus: the penalty lowers the reward of replies that drift from the "
                              "reference, r - beta * KL"),
        (rewards - beta * diff.sum(1), "no mask: the positions after a reply's end were counted; multiply by mask"),
        (rewards - beta * kl / mask.sum(1), mean_msg),
        (rewards - beta * (mask * diff).mean(1), mean_msg),
    ])


@_exercise(S.truncation_penalised, "the penalty subtracted from the replies that did not end, only them")
def check_truncation_penalised(fn):
    """Check `fn(rewards (B,), ended (B,) bool, penalty) -> (B,)`."""
    rewards, penalty = torch.tensor([1.0, 2.0, 0.5, -1.0]), 0.5
    ended = torch.tensor([True, False, True, False])
    _compare(fn(rewards.clone(), ended.clone(), penalty), torch.tensor([1.0, 1.5, 0.5, -1.5]),
             dict(rewards=rewards, ended=ended, penalty=penalty), what="rewards", wrong=[
        (rewards - penalty * ended.float(), "you penalised the replies that ended: the penalty is for the ones that "
                                            "did NOT end (cut off at the token cap), ~ended"),
        (rewards + penalty * (~ended).float(), "the penalty was added: subtract it from the cut-off replies"),
    ])


@_exercise(S.length_normalised_logprob, "sum over the real tokens / their number, rows of different lengths")
def check_length_normalised_logprob(fn):
    """Check `fn(token_logp (B, T), mask (B, T)) -> (B,)` the mean log-prob per real token."""
    token_logp = -3 * torch.rand(3, 5, generator=torch.Generator().manual_seed(2)) - 0.1
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 1.0, 1.0]])
    total = (token_logp * mask).sum(1)
    padding = "the padding positions were counted: multiply by the mask before summing"
    _compare(fn(token_logp.clone(), mask.clone()), total / mask.sum(1), dict(token_logp=token_logp, mask=mask),
             what="log-probs", wrong=[
        (total / 5, "you divided by T, the padded length: divide by each row's number of real tokens, mask.sum(1)"),
        (total, "not normalised: divide the sum by the number of real tokens, mask.sum(1)"),
        (token_logp.sum(1) / mask.sum(1), padding),
        (token_logp.mean(1), padding),
    ])


# ------------------------------------------------------------------------------ distributional reward models


_P = torch.tensor([0.02, 0.03, 0.05, 0.10, 0.15, 0.25, 0.18, 0.12, 0.06, 0.04])  # over the scores 1..10
_OFF_BY_ONE = "off by one: the scores are 1..10, not 0..9 (column i holds the score i + 1)"


@_exercise(S.sampled_reward, "scores 1..10; one draw has the mean and variance of p, m draws variance Var_p / m")
def check_sampled_reward(fn):
    """Check `fn(probs (N, 10), m, generator=None) -> (N,)` float means of m scores drawn from each row: exact
    on one-hot rows, then the mean and variance over 20000 rows."""
    one_hot = F.one_hot(torch.tensor([0, 4, 9]), 10).float()
    got = _compare(fn(one_hot.clone(), 3, generator=torch.Generator().manual_seed(0)), torch.tensor([1.0, 5.0, 10.0]),
                   dict(probs=one_hot, m=3), what="scores", wrong=[
        (torch.tensor([0.0, 4.0, 9.0]), _OFF_BY_ONE),
        (torch.tensor([3.0, 15.0, 30.0]), "you summed the m draws: take their mean"),
    ])
    if not got.is_floating_point():
        raise ExerciseError(f"return a float tensor (a mean of scores), got dtype {got.dtype}")
    n, scores = 20_000, torch.arange(1, 11, dtype=torch.float64)
    mean_p = float((_P * scores).sum())
    var_p = float((_P * scores ** 2).sum()) - mean_p ** 2
    for m in (1, 4):
        got = _tensor(fn(_P.repeat(n, 1), m, generator=torch.Generator().manual_seed(m))).double()
        if got.shape != (n,):
            raise ExerciseError(f"for {n} rows the result should have shape ({n},), got {tuple(got.shape)}")
        mean, var = got.mean().item(), got.var().item()
        if var < 0.05 * var_p / m:
            if _close(got, torch.full_like(got, mean_p)):
                raise ExerciseError(f"you returned the expected value E[p] = {mean_p:.3f}, which does not vary: "
                                    "draw scores at random from p (torch.multinomial)")
            if _close(got, torch.full_like(got, float(_P.argmax()) + 1)):
                raise ExerciseError("you returned the most likely score (argmax), which does not vary: draw scores "
                                    "at random from p (torch.multinomial)")
            raise ExerciseError(f"the scores barely vary (variance {var:.3f}): draw them at random from p")
        if abs(mean - (mean_p - 1)) < 0.1:
            raise ExerciseError(f"{_OFF_BY_ONE}; the mean of your scores is {mean:.3f}, E[p] = {mean_p:.3f}")
        if abs(mean - m * mean_p) < 0.1 * m and m > 1:
            raise ExerciseError("you summed the m draws: take their mean")
        if abs(mean - mean_p) > 0.1:
            raise ExerciseError(f"with m = {m} the mean of your scores over {n} rows is {mean:.3f}, "
                                f"expected E[p] = {mean_p:.3f}")
        if m > 1 and abs(var / var_p - 1) < 0.1:
            raise ExerciseError(f"m was ignored: the mean of m = {m} independent draws has variance Var_p / m = "
                                f"{var_p / m:.3f}, yours has {var:.3f}, the variance of a single draw")
        if abs(var / (var_p / m) - 1) > 0.1:
            raise ExerciseError(f"with m = {m} the variance of your scores is {var:.3f}, expected Var_p / m = "
                                f"{var_p / m:.3f} (independent draws, with replacement)")


@_exercise(S.centring_term, "coef * mean((s_c + s_r)^2) on 3 pairs")
def check_centring_term(fn):
    """Check `fn(s_chosen (n,), s_rejected (n,), coef) -> ()` the reward-centring term."""
    s_c, s_r, coef = torch.tensor([1.0, -0.5, 2.0]), torch.tensor([0.5, 1.0, -1.0]), 0.01
    sq = (s_c + s_r) ** 2
    _compare(fn(s_c.clone(), s_r.clone(), coef), coef * sq.mean(), dict(s_chosen=s_c, s_rejected=s_r, coef=coef),
             what="term", wrong=[
        (coef * ((s_c - s_r) ** 2).mean(), "you squared the gap (s_c - s_r)^2: centring squares the SUM "
                                          "(s_c + s_r)^2, which pulls both rewards towards zero and leaves their "
                                          "gap (what the preferences fix) alone"),
        (sq.mean(), "coef is missing: multiply the mean by coef"),
        (coef * sq.sum(), "you summed over the pairs: take the mean"),
    ])
