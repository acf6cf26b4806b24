"""The outside share: once rules are active, some candidates are drawn
without them, so a wrong rule still meets the runs that refute it."""
from __future__ import annotations

import pytest

from acetest_ml.learn.learner import KEPT, PROBATION, REJECTED, RuleLearner
from acetest_ml.learn.sampling import LearningSampler, registry_check
from acetest_ml.learn.evaluate import holds
from acetest_ml.solve.registry import RegistryProblem
from acetest_ml.spec import get_spec


def _sampler(seed=4, share=None, prior=("value.rank == 2",)):
    spec = get_spec("tf.raw_ops.BiasAdd")
    kw = {} if share is None else {"outside_share": share}
    return spec, LearningSampler(spec, [RegistryProblem(spec)], seed=seed, prior=list(prior), **kw)


def test_a_share_of_candidates_is_drawn_without_the_rules():
    spec, s = _sampler()
    assert s.learner.active() == ["value.rank == 2"]
    drawn = [s.next() for _ in range(320)]
    outside = [ai for ai in drawn if ai.origin["rules"] == "outside"]
    inside = [ai for ai in drawn if ai.origin["rules"] != "outside"]
    assert 8 <= len(outside) <= 40, len(outside)   # 1/16 of 320 = 20
    assert s.info()["outside_drawn"] == len(outside)
    assert all(holds("value.rank == 2", ai) for ai in inside)
    # outside candidates come from the registry constraints alone: some break the rule
    assert any(not holds("value.rank == 2", ai) for ai in outside)
    # seeded: the same seed draws the same stream
    _, s2 = _sampler()
    assert [a.dumps() for a in drawn] == [s2.next().dumps() for _ in range(320)]


def test_share_zero_draws_every_candidate_under_the_rules():
    _, s = _sampler(share=0.0)
    assert all(s.next().origin["rules"] != "outside" for _ in range(200))
    with pytest.raises(ValueError):
        _sampler(share=1.0)


def test_no_rules_no_outside_draws():
    _, s = _sampler(prior=())
    assert all(s.next().origin["rules"] == "base" for _ in range(100))


def _outside_run(s, broken):
    while True:
        ai = s.next()
        if ai.origin["rules"] == "outside" and holds(broken, ai) is False:
            return ai


def test_a_crash_outside_the_rules_rejects_the_rule_it_breaks():
    _, s = _sampler()
    ai = _outside_run(s, "value.rank == 2")
    assert s.observe(ai, "crash", "SIGABRT: x") is True
    rule = s.learner.rules[0]
    assert rule.status == REJECTED and "crash" in rule.reason
    assert s.learner.active() == []


def test_an_invalid_run_outside_the_rules_is_explained_and_not_counted():
    spec = get_spec("tf.raw_ops.BiasAdd")
    learner = RuleLearner(spec, registry_check(spec), window=4, sources=("message",))
    _, s = _sampler()
    ai = _outside_run(s, "value.rank == 2")
    # the message names a rule; outside, a run that breaks an active rule proposes nothing
    assert learner._propose("value.rank == 2", "test", key="k")
    assert learner.observe(ai, "invalid", "Must provide as many biases as the last dimension",
                           outside=True) is False
    assert learner.active() == ["value.rank == 2"]
    assert [r.expr for r in learner.rules] == ["value.rank == 2"]
    # probation rates leave outside runs out: the same run counted inside raises them
    assert learner._rate(None, 0, learner.n) == 0.0
    learner.observe(ai, "invalid", "Must provide as many biases as the last dimension")
    assert learner._rate(None, 0, learner.n) == 1.0
    assert learner.rules[0].status in (PROBATION, KEPT)


def _oracle(ai):
    if ai.args["value"].rank >= 2:
        return "pass", None
    return "invalid", f"Input tensor must be at least 2D: [{ai.args['value'].rank}]"


def _campaign(sampler, n_runs, batch=8, stop_after=None):
    """A campaign's loop: batches of candidates, the rest of a batch dropped
    (unrecorded) when a run changes the rule set."""
    from types import SimpleNamespace
    records, changes = [], 0
    while len(records) < n_runs and (stop_after is None or len(records) < stop_after):
        for ai in [sampler.next() for _ in range(batch)]:
            outcome, message = _oracle(ai)
            records.append(SimpleNamespace(input=ai, outcome=outcome, message=message))
            if sampler.observe(ai, outcome, message):
                changes += 1
                break
            if len(records) >= n_runs or (stop_after is not None and len(records) >= stop_after):
                break
    return records, changes


def test_replay_redraws_the_dropped_rest_of_a_batch():
    spec = get_spec("tf.raw_ops.BiasAdd")
    make = lambda: LearningSampler(spec, [RegistryProblem(spec)], seed=11, window=4)  # noqa: E731
    whole, changes = _campaign(make(), 60)
    assert changes >= 1
    positions = [r.input.origin["pos"] for r in whole]
    assert positions != list(range(len(whole)))  # some draws were dropped
    # killed after 20 records, resumed: replay, then go on
    first, _ = _campaign(make(), 60, stop_after=20)
    resumed = make()
    resumed.replay(first)
    rest, _ = _campaign(resumed, 60 - len(first))
    got = [r.input.dumps() for r in first + rest]
    assert got == [r.input.dumps() for r in whole]


def test_drawing_ahead_leaves_the_stream_as_it_was():
    """The generator process draws the rule set's next candidates (and the
    outside stream's next one) while runs execute: however many it drew
    ahead between runs, rule changes included, the records are the same."""
    import random
    spec = get_spec("tf.raw_ops.BiasAdd")
    make = lambda: LearningSampler(spec, [RegistryProblem(spec)], seed=11, window=4)  # noqa: E731
    plain, changes = _campaign(make(), 60)
    assert changes >= 1
    ahead = make()
    rng = random.Random(5)
    drawn_ahead = 0
    real_observe = ahead.observe

    def observe(ai, outcome, message, **kw):
        nonlocal drawn_ahead
        changed = real_observe(ai, outcome, message, **kw)
        for _ in range(rng.randrange(6)):  # as many as the idle time allowed
            drawn_ahead += ahead.prefetch(4)
        return changed
    ahead.observe = observe
    got, _ = _campaign(ahead, 60)
    assert drawn_ahead > 20
    assert [r.input.dumps() for r in got] == [r.input.dumps() for r in plain]
    assert any(r.input.origin["rules"] == "outside" for r in got)


def _lag_campaign(sampler, n_runs, pending=None):
    """The generator process of a campaign without a classifier: each
    candidate is handed out before the run before it reaches the learner."""
    from types import SimpleNamespace
    records = []
    for _ in range(n_runs):
        ai = sampler.next()
        if pending is not None:
            sampler.observe(*pending)
        outcome, message = _oracle(ai)
        records.append(SimpleNamespace(input=ai, outcome=outcome, message=message))
        pending = (ai, outcome, message)
    return records, pending


def test_replay_one_run_behind_resumes_the_same_stream():
    spec = get_spec("tf.raw_ops.BiasAdd")
    make = lambda: LearningSampler(spec, [RegistryProblem(spec)], seed=11, window=4)  # noqa: E731
    whole_sampler = make()
    whole, _ = _lag_campaign(whole_sampler, 60)
    assert whole_sampler.epoch >= 1  # rules changed on the way
    first, _ = _lag_campaign(make(), 23)
    resumed = make()
    pending = resumed.replay(first, lag=True)
    assert pending is not None and pending[0] is first[-1].input  # the last run waits for the next draw
    rest, _ = _lag_campaign(resumed, 60 - len(first), pending=pending[:3])
    assert [r.input.dumps() for r in first + rest] == [r.input.dumps() for r in whole]
    # replayed in the order of a campaign with a classifier, the stream differs
    other = make()
    other.replay(first)
    assert [other.next().dumps() for _ in range(len(rest))] != [r.input.dumps() for r in rest]
