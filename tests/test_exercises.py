"""The notebook exercises: each reference solution passes its check, each usual wrong answer is caught and named,
and an exercise not done yet neither blocks a notebook nor hides the reference from the automated runs."""

import pytest
import torch
import torch.nn.functional as F

from alignlib import exercises, solutions
from alignlib.exercises import SOLUTIONS_ENV, ExerciseError

NAMES = ["bradley_terry_loss", "last_token_index", "ema_step", "leave_one_out_advantages", "sequence_logprob",
         "reinforce_loss", "score_function_gradients", "kl_penalised_rewards", "truncation_penalised",
         "length_normalised_logprob", "sampled_reward", "centring_term"]


@pytest.fixture(autouse=True)
def learner_mode(monkeypatch):
    """As in a learner's notebook: the reference is never swapped in unless a test asks for it."""
    monkeypatch.delenv(SOLUTIONS_ENV, raising=False)


def test_every_exercise_is_registered_with_its_check_and_reference():
    assert list(exercises.EXERCISES) == NAMES
    for name in NAMES:
        check, reference = exercises.EXERCISES[name]
        assert check is getattr(exercises, f"check_{name}") and check.__name__ == f"check_{name}"
        assert reference is getattr(solutions, name)


@pytest.mark.parametrize("name", NAMES)
def test_the_reference_passes(name, capsys):
    check, reference = exercises.EXERCISES[name]
    assert check(reference) is True
    assert capsys.readouterr().out.startswith(f"✓ {name}: ")


def stub(*args, **kwargs):
    raise NotImplementedError


@pytest.mark.parametrize("name", NAMES)
def test_not_done_yet_returns_false_without_raising(name, capsys):
    assert exercises.EXERCISES[name][0](stub) is False
    out = capsys.readouterr().out
    assert "not done yet" in out and f'exercises.solution("{name}")' in out and "✓" not in out


@pytest.mark.parametrize("name", NAMES)
def test_not_done_yet_checks_the_reference_in_the_automated_runs(name, capsys, monkeypatch):
    monkeypatch.setenv(SOLUTIONS_ENV, "1")
    assert exercises.EXERCISES[name][0](stub) is True
    out = capsys.readouterr().out
    assert "checking the reference solution" in out and f"✓ {name}: " in out


def test_solution_prints_the_reference_source(capsys):
    exercises.solution("bradley_terry_loss")
    out = capsys.readouterr().out
    assert "def bradley_terry_loss(s_chosen" in out and "F.logsigmoid(s_chosen - s_rejected)" in out
    with pytest.raises(ValueError, match="no exercise 'nope'"):
        exercises.solution("nope")


# ------------------------------------------------------------------------------ wrong answers

def _multinomial(p, m, generator, replacement=True):
    return torch.multinomial(p, m, replacement=replacement, generator=generator)


def _ema_update_first(r, b, alpha):
    new = float(r.mean()) if b is None else alpha * b + (1 - alpha) * float(r.mean())
    return r - new, new


def _ema_none_is_zero(r, b, alpha):
    b = b or 0.0
    return r - b, alpha * b + (1 - alpha) * float(r.mean())


def _ema_start_at_zero(r, b, alpha):  # right advantages, but the EMA starts from 0
    mean = float(r.mean())
    b0 = mean if b is None else b
    return r - b0, alpha * (b or 0.0) + (1 - alpha) * mean


def _ema_alpha_swapped(r, b, alpha):
    mean = float(r.mean())
    return (r - mean, mean) if b is None else (r - b, (1 - alpha) * b + alpha * mean)


def _seq_until_argmax(lp, tokens, eos):  # argmax of "is eos" is 0 for a reply without eos
    end = (tokens == eos).int().argmax(1, keepdim=True)
    return (lp * (torch.arange(tokens.shape[1]) <= end)).sum(1)


def _seq_without_eos(lp, tokens, eos):
    is_eos = (tokens == eos).long()
    return (lp * (is_eos.cumsum(1) == 0)).sum(1)


WRONG = [
    # 1. Bradley-Terry
    ("bradley_terry_loss", lambda c, r: F.logsigmoid(c - r).mean(), "sign is flipped"),
    ("bradley_terry_loss", lambda c, r: -torch.log(torch.sigmoid(c - r)).mean(), "use logsigmoid: log(sigmoid"),
    ("bradley_terry_loss", lambda c, r: -F.logsigmoid(c - r).sum(), "summed over the pairs"),
    ("bradley_terry_loss", lambda c, r: -F.logsigmoid(r - c).mean(), "chosen and rejected are swapped"),
    # 2. last real token
    ("last_token_index", lambda m: m.sum(1), "first PAD token"),
    ("last_token_index", lambda m: m.sum(1) - 1, "right only for right padding"),
    ("last_token_index", lambda m: torch.full((m.shape[0],), m.shape[1] - 1), "only with left padding"),
    ("last_token_index", lambda m: solutions.last_token_index(m).float(), "integer (long) tensor"),
    # 3. EMA baseline
    ("ema_step", _ema_update_first, "updated with this batch before subtracting"),
    ("ema_step", _ema_none_is_zero, "at the first batch (baseline None)"),
    ("ema_step", _ema_start_at_zero, "at the first batch (baseline None)"),
    ("ema_step", _ema_alpha_swapped, "alpha is swapped"),
    ("ema_step", lambda r, b, alpha: r - r.mean(), "return a pair"),
    # 4. leave-one-out
    ("leave_one_out_advantages", lambda r: r - r.mean(1, keepdim=True), "includes the reply itself"),
    ("leave_one_out_advantages", lambda r: r - r.mean(1, keepdim=True), "with k = 2 that is A = r1 - r2"),
    ("leave_one_out_advantages", lambda r: r - r.mean(), "whole batch"),
    ("leave_one_out_advantages", lambda r: r - r.flip(1), "wrong advantages (k = 4)"),  # right only for k = 2
    # 5. log-prob of a reply
    ("sequence_logprob", lambda lp, t, eos: lp.sum(1), "summed over all T positions"),
    ("sequence_logprob", _seq_without_eos, "eos token itself was left out"),
    ("sequence_logprob", _seq_until_argmax, "reply without eos"),
    ("sequence_logprob", lambda lp, t, eos: (lp * (t != eos)).sum(1), "dropped every eos id"),
    # 6. REINFORCE loss
    ("reinforce_loss", lambda lp, a: (a.detach() * lp).mean(), "sign is flipped"),
    ("reinforce_loss", lambda lp, a: -(a * lp).mean(), "detach them"),
    ("reinforce_loss", lambda lp, a: -(a.detach() * lp).sum(), "summed over the replies"),
    ("reinforce_loss", lambda lp, a: -(a * lp).mean().detach(), "no gradient"),
    # 7. score function of a softmax bandit
    ("score_function_gradients", lambda a, p, r, b: (r - b) * (a == 0).float(), "not 1[a=0]"),
    ("score_function_gradients", lambda a, p, r, b: (r + b) * ((a == 0).float() - p), "baseline was added"),
    ("score_function_gradients", lambda a, p, r, b: (r - b) * ((a == 0).float() - 0.3), "estimates are biased"),
    # 8. KL penalty
    ("kl_penalised_rewards", lambda r, lp, ref, m, beta: r + beta * (m * (lp - ref)).sum(1), "plus instead of minus"),
    ("kl_penalised_rewards", lambda r, lp, ref, m, beta: r - beta * (lp - ref).sum(1), "no mask"),
    ("kl_penalised_rewards", lambda r, lp, ref, m, beta: r - beta * (m * (lp - ref)).sum(1) / m.sum(1),
     "averaged over the tokens"),
    ("kl_penalised_rewards", lambda r, lp, ref, m, beta: r - beta * (m * (lp - ref)).mean(1),
     "averaged over the tokens"),
    # 9. truncation penalty
    ("truncation_penalised", lambda r, ended, pen: r - pen * ended.float(), "penalised the replies that ended"),
    ("truncation_penalised", lambda r, ended, pen: r + pen * (~ended).float(), "penalty was added"),
    # 10. length-normalised log-prob
    ("length_normalised_logprob", lambda lp, m: (lp * m).sum(1) / m.shape[1], "divided by T"),
    ("length_normalised_logprob", lambda lp, m: (lp * m).sum(1), "not normalised"),
    ("length_normalised_logprob", lambda lp, m: lp.sum(1) / m.sum(1), "padding positions were counted"),
    # 11. sampled reward
    ("sampled_reward", lambda p, m, generator=None: _multinomial(p, m, generator).float().mean(1), "off by one"),
    ("sampled_reward", lambda p, m, generator=None: (p.argmax(1) + 1).float(), "argmax"),
    ("sampled_reward", lambda p, m, generator=None: (p * torch.arange(1, 11)).sum(1), "expected value"),
    ("sampled_reward", lambda p, m, generator=None: (_multinomial(p, 1, generator)[:, 0] + 1).float(),
     "m was ignored"),
    ("sampled_reward", lambda p, m, generator=None: (_multinomial(p, m, generator) + 1).float().sum(1),
     "summed the m draws"),
    ("sampled_reward", lambda p, m, generator=None: 0.5 * (_multinomial(p, m, generator) + 1).float().mean(1)
     + 0.5 * (p * torch.arange(1, 11)).sum(1), "the variance of your scores"),  # shrunk towards E[p]
    # 12. reward centring
    ("centring_term", lambda c, r, coef: coef * ((c - r) ** 2).mean(), "squared the gap"),
    ("centring_term", lambda c, r, coef: ((c + r) ** 2).mean(), "coef is missing"),
    ("centring_term", lambda c, r, coef: coef * ((c + r) ** 2).sum(), "summed over the pairs"),
]


def test_every_exercise_has_wrong_answers():
    assert {name for name, _, _ in WRONG} == set(NAMES)


@pytest.mark.parametrize("name, fn, phrase", WRONG, ids=[f"{n}-{p}" for n, _, p in WRONG])
def test_a_wrong_answer_is_caught_and_named(name, fn, phrase, capsys):
    with pytest.raises(ExerciseError) as caught:
        exercises.EXERCISES[name][0](fn)
    message = str(caught.value)
    assert message.startswith(f"{name}: ") and phrase in message, message
    assert "✓" not in capsys.readouterr().out


def test_an_unrecognised_mistake_shows_inputs_expected_and_got():
    with pytest.raises(ExerciseError) as caught:
        exercises.check_truncation_penalised(lambda r, ended, pen: r)  # no penalty at all
    message = str(caught.value)
    assert "wrong rewards" in message and "inputs: rewards=[1.0, 2.0, 0.5, -1.0]" in message
    assert "expected [1.0, 1.5, 0.5, -1.5], got [1.0, 2.0, 0.5, -1.0]" in message


def test_shape_and_missing_return_are_explained():
    with pytest.raises(ExerciseError, match=r"shape \(4,\), expected \(\)"):
        exercises.check_bradley_terry_loss(lambda c, r: -F.logsigmoid(c - r))
    with pytest.raises(ExerciseError, match="forget `return`"):
        exercises.check_centring_term(lambda c, r, coef: None)
