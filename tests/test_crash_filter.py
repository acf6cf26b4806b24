"""Crash-aware filtering: crash/timeout as a class of its own in training,
predicted crashes never discarded, known signatures deprioritised, and
exploration from the uncertain band."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import yaml

from acetest_ml.classify import ModelFileError, ValidityModel, train_model
from acetest_ml.cli import main
from acetest_ml.filter import KnownCrashes, OfflineFilter, beyond_int32, decide, explorable
from acetest_ml.model import AbstractInput, ApiSpec, ArgSpec, TensorDesc

from helpers import CRASH_API, candidates, lstm_block_cell_rules, needs_tf_crash

SPEC = ApiSpec("tf.raw_ops.Fake", "tf", [ArgSpec("x", "tensor", dtypes=["float32"]),
                                         ArgSpec("n", "int", minimum=0, maximum=9)])


def _ai(rank, n, seed=0):
    return AbstractInput(SPEC.name, {"x": TensorDesc("float32", (2,) * rank), "n": n}, value_seed=seed)


def _rule(ai):
    """rank 1 crashes, n > 5 is rejected, the rest passes."""
    if ai.args["x"].rank == 1:
        return 2
    return 0 if ai.args["n"] > 5 else 1


def _data(count=300, seed=0):
    rng = np.random.RandomState(seed)
    xs = [_ai(int(rng.randint(0, 5)), int(rng.randint(0, 10)), i) for i in range(count)]
    return xs, [_rule(a) for a in xs]


@pytest.fixture(scope="module")
def model():
    xs, ys = _data()
    return train_model(SPEC, xs, ys, "lightgbm", {"num_threads": 1, "min_data_in_leaf": 3}, 0.5)


def test_crash_is_a_class_of_its_own(model, tmp_path):
    assert model.classes == [0, 1, 2] and model.has_crash_class
    probe = [_ai(1, 2), _ai(1, 8), _ai(3, 2), _ai(3, 8)]
    p = model.predict_batch(probe)
    assert np.allclose(p.sum(axis=1), 1.0)
    assert np.allclose(model.score_batch(probe), p[:, 1] + p[:, 2])  # not invalid = pass + crash
    crash = model.crash_batch(probe)
    assert crash[0] > 0.8 and crash[1] > 0.8 and crash[2] < 0.2 and crash[3] < 0.2
    assert model.score_batch(probe)[3] < 0.2  # rank 3 with n > 5 is invalid
    m = model.evaluate(*_data(100, seed=1))
    assert m["crash"]["n"] > 0 and m["crash"]["roc_auc"] > 0.95
    side = model.save(tmp_path)
    doc = json.loads(side.read_text())
    assert doc["format_version"] == 2 and doc["classes"] == [0, 1, 2]
    back = ValidityModel.load(side)
    assert back.classes == [0, 1, 2] and np.allclose(back.predict_batch(probe), p)


def test_two_class_models_and_old_sidecars(tmp_path):
    xs, ys = _data()
    binary = train_model(SPEC, xs, [int(y != 0) for y in ys], "lightgbm", {"num_threads": 1}, 0.5)
    assert binary.classes == [0, 1] and not binary.has_crash_class
    assert np.all(binary.crash_batch(xs[:5]) == 0.0)
    side = binary.save(tmp_path)
    doc = json.loads(side.read_text())
    del doc["classes"]
    doc["format_version"] = 1
    side.write_text(json.dumps(doc))
    old = ValidityModel.load(side)  # a format-1 sidecar is a two-class model
    assert old.classes == [0, 1] and np.allclose(old.score_batch(xs[:20]), binary.score_batch(xs[:20]))
    doc["format_version"] = 7
    side.write_text(json.dumps(doc))
    with pytest.raises(ModelFileError, match="format version 7 is not one this acetest-ml reads"):
        ValidityModel.load(side)
    # a sidecar naming three classes for a two-class model file is refused
    doc.update(format_version=2, classes=[0, 1, 2])
    side.write_text(json.dumps(doc))
    with pytest.raises(ModelFileError, match="2 classes, its sidecar names 3"):
        ValidityModel.load(side)


def test_other_kinds_learn_three_classes():
    xs, ys = _data(200)
    m = train_model(SPEC, xs, ys, "random_forest", {"n_estimators": 30}, 0.5)
    assert m.classes == [0, 1, 2] and m.crash_batch([_ai(1, 3)])[0] > 0.5


def test_decisions_keep_predicted_crashes_and_deprioritise_known_ones(model):
    model.threshold = 1.0  # nothing would pass on its validity score alone
    try:
        flt = OfflineFilter(model, "test", SPEC, known_crash_k=2, crash_threshold=0.3)
        batch = [_ai(1, 8, 1), _ai(3, 8, 2), _ai(1, 2, 3)]
        scores, decisions = decide(flt, batch)
        assert decisions == ["crash", "reject", "crash"] and scores[0] < 1.0

        def settle():
            return [flt.settle_crash(ai, s) if d == "crash" else d
                    for ai, s, d in zip(batch, *decide(flt, batch))]
        assert settle() == ["accept", "reject", "accept"]
        assert flt.counts["crash_kept"] == 2
        # one sighting of a signature: not known yet (k = 2)
        flt.observe(_ai(1, 4), "crash", "SIGABRT: Check failed: x")
        assert settle() == ["accept", "reject", "accept"]
        flt.observe(_ai(1, 7), "crash", "SIGABRT: Check failed: x")
        assert settle() == ["known", "reject", "known"]
        assert flt.info()["signatures_seen"] == {"SIGABRT: Check failed: x": 2}
    finally:
        model.threshold = 0.5


def test_known_signature_is_the_nearest_crash():
    kc = KnownCrashes(SPEC, 1)
    kc.observe(_ai(1, 0), "crash", "A")
    kc.observe(_ai(4, 9), "timeout", None)  # a timeout's signature is "timeout"
    kc.observe(_ai(0, 0), "pass", None)  # not a crash: ignored
    assert kc.counts == {"A": 1, "timeout": 1}
    assert kc.predict([_ai(1, 1), _ai(4, 8), _ai(2, 0)]) == ["A", "timeout", "A"]
    assert KnownCrashes(SPEC, 0).known([_ai(1, 1)]).tolist() == [False]  # k = 0: off


def test_known_signature_survives_huge_float_features():
    # float attributes near the float64 limits made the distance's span
    # overflow to inf: every distance was NaN or 0 and argmin named the
    # first recorded crash, so a crash of another signature passed for known
    spec = ApiSpec("tf.raw_ops.Fake3", "tf", [ArgSpec("x", "tensor", dtypes=["float32"]),
                                              ArgSpec("alpha", "float")])

    def ai(rank, alpha):
        return AbstractInput(spec.name, {"x": TensorDesc("float32", (2,) * rank), "alpha": alpha}, value_seed=0)
    kc = KnownCrashes(spec, 1)
    kc.observe(ai(1, -1.7e308), "crash", "A")
    kc.observe(ai(4, 1.7e308), "crash", "B")
    assert kc.predict([ai(4, 1.6e308), ai(1, -1.6e308), ai(4, float("inf"))]) == ["B", "A", "B"]


def test_known_signature_tells_which_attribute_overflows_int32():
    """The features clip huge integers, so a strides overflow and a
    dilations overflow look alike to them; a crash input is matched only
    against recorded crashes overflowing the same arguments (DepthwiseConv2dNative's
    two mkl_layout_pass aborts, one of which the filtered arms lost as 'known')."""
    spec = ApiSpec("tf.raw_ops.Fake2", "tf", [ArgSpec("x", "tensor", dtypes=["float32"]),
                                              ArgSpec("strides", "int_list"), ArgSpec("dilations", "int_list")])
    big = 2 ** 40

    def ai(strides, dilations, rank=4):
        return AbstractInput(spec.name, {"x": TensorDesc("float32", (2,) * rank), "strides": strides,
                                         "dilations": dilations}, value_seed=0)
    kc = KnownCrashes(spec, 1)
    kc.observe(ai([1, big, 1, 1], [1, 1, 1, 1]), "crash", "strides")
    kc.observe(ai([1, 1, 1, 1], [1, 2, 1, 1], rank=3), "crash", "rank")
    dil = ai([1, 1, 1, 1], [1, big, 1, 1])
    # no recorded crash overflows dilations: unknown, so it runs
    assert kc.predict([dil, ai([1, big, 1, 1], [1, 1, 1, 1], rank=3), ai([1, 1, 1, 1], [1, 1, 1, 1])]) \
        == [None, "strides", "rank"]
    assert kc.known([dil]).tolist() == [False]
    kc.observe(dil, "crash", "dilations")
    assert kc.predict([ai([1, 1, 1, 1], [1, big, 2, 1])]) == ["dilations"]
    assert kc.known([ai([1, 1, 1, 1], [1, big, 2, 1])]).tolist() == [True]


def test_exploration_targets_the_uncertain_band():
    assert explorable("reject", 0.40, 0.5, 0.25) and not explorable("reject", 0.2, 0.5, 0.25)
    assert explorable("reject", 0.0, 0.5, 1.0)  # band 1: any score
    assert explorable("known", 0.99, 0.5, 0.0) and not explorable("accept", 0.9, 0.5, 1.0)


# --------------------------------------------------------------------------- a real campaign

LSTM = CRASH_API
# TF 2.21 aborts (CHECK failure) on a rank-1 cs_prev; with every tensor rank 2
# the random shapes are rejected.
RULES = lstm_block_cell_rules("== 2", cs_prev="in (1, 2)")


def _crash_model(tmp_path):
    """RULES written to ``tmp_path``, and a saved model of them (rank 1
    crashes, rank 2 is invalid) behind a registry with threshold 1.0:
    (rules path, registry path, training labels)."""
    from acetest_ml.campaign import CampaignConfig, resolve
    from acetest_ml.solve.sampler import Sampler
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    cfg = CampaignConfig(apis=[LSTM], out=str(tmp_path / "train"), rules=str(rules))
    spec, problems, _ = resolve(cfg, LSTM)
    sampler = Sampler(problems, 12345)
    xs = [sampler.next() for _ in range(120)]
    ys = [2 if ai.args["cs_prev"].rank == 1 else 0 for ai in xs]
    m = train_model(spec, xs, ys, "lightgbm", {"num_threads": 1, "min_data_in_leaf": 3}, 0.5)
    models = tmp_path / "models.yaml"
    models.write_text(yaml.safe_dump({"models_dir": "m", "apis": {LSTM: {"threshold": 1.0}}}))
    m.save(tmp_path / "m")
    return rules, models, ys


@needs_tf_crash
def test_campaign_runs_predicted_crashes_until_their_signature_is_known(tmp_path):
    rules, models, ys = _crash_model(tmp_path)
    assert 20 < sum(1 for y in ys if y == 2) < 100
    out = str(tmp_path / "c")
    assert main(["campaign", "--api", LSTM, "--rules", str(rules), "--budget", "3", "--seed", "2",
                 "--out", out, "--no-progress", "--jobs", "1", "--ml-filter", "--models", str(models),
                 "--exploration", "0", "--known-crash-k", "2", "--known-crash-floor", "0"]) == 0
    rows = candidates(out, "idx, input, decision, score, outcome, signature", order="idx")
    rank = {r[0]: AbstractInput.loads(r[1]).args["cs_prev"].rank for r in rows}
    ran = [r for r in rows if r[4] is not None]
    # the first two predicted crashes ran (score < threshold 1.0: kept for their crash class)
    assert [r[4] for r in ran] == ["crash", "crash"] and len({r[5] for r in ran}) == 1
    assert all(rank[r[0]] == 1 and r[2] == "accept" and r[3] < 1.0 for r in ran)
    # afterwards every predicted crash is known (not run), and no crash input was discarded
    after = [r for r in rows if r[0] > ran[-1][0]]
    assert after and all(r[2] == "known" for r in after if rank[r[0]] == 1)
    assert all(r[2] == "discard" for r in rows if rank[r[0]] == 2)
    s = json.load(open(os.path.join(out, "summary.json")))["apis"][LSTM]
    assert s["filter"]["known_crash_skipped"] == sum(1 for r in rows if r[2] == "known") > 0
    assert s["filter"]["crash_kept"] == 2 and s["filter"]["crash_class"] is True


@needs_tf_crash
def test_known_crash_floor_runs_a_known_crash_when_nothing_else_ran(tmp_path, monkeypatch):
    # the same campaign with a floor of 4: once 4 candidates in a row were not
    # run, the next known crash runs (a crash-only API keeps running); the
    # reject floor (4x longer) is off here (test_reject_floor_... tests it)
    monkeypatch.setattr("acetest_ml.campaign.REJECT_FLOOR_FACTOR", 10 ** 6)
    rules, models, _ = _crash_model(tmp_path)
    out = str(tmp_path / "c")
    assert main(["campaign", "--api", LSTM, "--rules", str(rules), "--budget", "4", "--seed", "2",
                 "--out", out, "--no-progress", "--jobs", "1", "--ml-filter", "--models", str(models),
                 "--exploration", "0", "--known-crash-k", "2", "--known-crash-floor", "4"]) == 0
    rows = candidates(out, "idx, decision, outcome", order="idx")
    ran = [i for i, (idx, d, o) in enumerate(rows) if o is not None]
    assert len(ran) == 4 and all(rows[i][2] == "crash" for i in ran)
    # each run after the first two follows at least 4 candidates not run
    for a, b in zip(ran[1:], ran[2:]):
        assert b - a - 1 >= 4 and rows[b][1] == "accept"
    s = json.load(open(os.path.join(out, "summary.json")))["apis"][LSTM]["filter"]
    assert s["known_crash_floor_runs"] == 2
    assert s["known_crash_skipped"] == sum(1 for r in rows if r[1] == "known") >= 1


def test_thin_crash_class_and_int32_overflow_are_not_discarded(model):
    # a crash class with fewer runs than the floor is cut at 3x its share
    flt = OfflineFilter(model, "test", SPEC, crash_threshold=0.3, known_crash_floor=10 ** 6)
    share = model.counts["crash"] / model.counts["n"]
    assert flt.crash_cut == pytest.approx(min(0.3, 3 * share))
    assert OfflineFilter(model, "test", SPEC, crash_threshold=0.3).crash_cut == 0.3
    # huge ints and list items (TF's attribute checks abort on them) are kept
    huge = AbstractInput(SPEC.name, {"x": TensorDesc("float32", (2, 2)), "n": 2 ** 40})
    assert beyond_int32(huge) and not beyond_int32(_ai(2, 8))
    assert beyond_int32(AbstractInput(SPEC.name, {"x": [1, [-2 ** 31 - 1]]}))
    model.threshold = 1.0
    try:
        flt = OfflineFilter(model, "test", SPEC, crash_threshold=0.3)
        _, decisions = decide(flt, [_ai(3, 8, 2), huge])
        assert decisions == ["reject", "crash"] and flt.counts["int32_kept"] == 1
    finally:
        model.threshold = 0.5


def test_time_budget_stops_the_campaign(tmp_path):
    out = str(tmp_path / "t")
    assert main(["campaign", "--api", "tf.raw_ops.Add", "--budget", "100000", "--seed", "1", "--out", out,
                 "--no-progress", "--jobs", "1", "--time-budget", "3"]) == 0
    s = json.load(open(os.path.join(out, "summary.json")))["apis"]["tf.raw_ops.Add"]
    assert 0 < s["executed"] < 100000 and "time budget reached (3s)" in s["reason"]
    assert 3.0 <= s["elapsed_s"] < 15.0  # the worker start is not in the clock
    assert main(["campaign", "--api", "tf.raw_ops.Add", "--out", str(tmp_path / "u"), "--time-budget", "0"]) == 2


def test_crash_settings_are_validated(capsys):
    from acetest_ml.settings import CampaignConfig, SettingError
    for kw, name in (({"crash_threshold": 1.5}, "crash_threshold"), ({"explore_band": -0.1}, "explore_band"),
                     ({"known_crash_k": -1}, "known_crash_k"), ({"time_budget": float("nan")}, "time_budget"),
                     ({"known_crash_floor": -1}, "known_crash_floor"), ({"spares": 0}, "spares"),
                     ({"prefetch": -1}, "prefetch")):
        with pytest.raises(SettingError, match=name):
            CampaignConfig(apis=["tf.raw_ops.Add"], out="/tmp/never-created-ilearn", **kw)
    assert main(["campaign", "--api", "tf.raw_ops.Add", "--out", "/tmp/never-created-ilearn",
                 "--known-crash-k", "-2"]) == 2
    assert "--known-crash-k: must be a whole number >= 0" in capsys.readouterr().err


def test_reject_floor_runs_a_predicted_invalid_input_when_nothing_ran(tmp_path):
    # a model (no crash class) behind threshold 1.0 rejects every candidate:
    # after 4 x floor candidates in a row not run, the next one runs anyway
    from acetest_ml.campaign import REJECT_FLOOR_FACTOR, CampaignConfig, resolve
    from acetest_ml.solve.sampler import Sampler
    api = "tf.raw_ops.Add"
    spec, problems, _ = resolve(CampaignConfig(apis=[api], out=str(tmp_path / "t")), api)
    sampler = Sampler(problems, 7)
    xs = [sampler.next() for _ in range(80)]
    ys = [i % 2 for i in range(80)]
    train_model(spec, xs, ys, "lightgbm", {"num_threads": 1, "min_data_in_leaf": 3}, 0.5).save(tmp_path / "m")
    models = tmp_path / "models.yaml"
    models.write_text(yaml.safe_dump({"models_dir": "m", "apis": {api: {"threshold": 1.0}}}))
    out = str(tmp_path / "c")
    assert main(["campaign", "--api", api, "--budget", "3", "--seed", "2", "--out", out, "--no-progress",
                 "--jobs", "1", "--ml-filter", "--models", str(models), "--exploration", "0",
                 "--known-crash-floor", "2"]) == 0
    rows = candidates(out, "idx, decision, outcome", order="idx")
    ran = [idx for idx, d, o in rows if o is not None]
    gap = REJECT_FLOOR_FACTOR * 2
    assert ran == [gap, 2 * gap + 1, 3 * gap + 2]
    assert all(d == "explore" for idx, d, o in rows if idx in ran)
    assert all(d == "discard" for idx, d, o in rows if idx not in ran)
    s = json.load(open(os.path.join(out, "summary.json")))["apis"][api]["filter"]
    assert s["reject_floor_runs"] == 3 and s["crash_class"] is False
    # off with the known-crash floor
    out2 = str(tmp_path / "d")
    assert main(["campaign", "--api", api, "--budget", "2", "--seed", "2", "--out", out2, "--no-progress",
                 "--jobs", "1", "--ml-filter", "--models", str(models), "--exploration", "0",
                 "--known-crash-floor", "0"]) == 0
    assert not [r for r in candidates(out2, "outcome") if r[0] is not None]


def test_lift_verdicts():
    from acetest_ml.filter import Lift

    def lift(acc, acc_pass, rej, rej_pass):
        lt = Lift()
        for i in range(acc):
            lt.tally("accept", 0.9, 0.5, "pass" if i < acc_pass else "invalid")
        for i in range(rej):
            lt.tally("explore", 0.3, 0.5, "pass" if i < rej_pass else "invalid")
        return lt

    assert lift(46, 41, 74, 72).none          # rejects pass as often: the model is wrong here
    assert lift(20, 0, 0, 0).none             # accepted inputs never pass: nothing to buy
    assert not lift(12, 0, 0, 0).none         # too few runs for that verdict
    assert not lift(114, 101, 6, 3).none      # a real lift (group_norm under learned rules)
    assert not lift(114, 31, 6, 0).none       # 27% against 0 of 6 (binary_cross_entropy)
    assert not lift(114, 13, 5, 0).none       # too few rejected runs to judge
    lt = lift(20, 20, 10, 10)
    assert lt.none
    # runs that are neither count for nothing: warm-up, no filter, a predicted
    # crash accepted below the threshold, an explored known crash above it
    for d, s in (("warmup", None), ("none", None), ("accept", 0.2), ("explore", 0.7)):
        lt.tally(d, s, 0.5, "invalid")
    assert lt.info()["accepted_runs"] == 20 and lt.info()["rejected_runs"] == 10
    # bypass runs that fail bring the discards back
    for _ in range(30):
        lt.tally("bypass", 0.1, 0.5, "invalid")
    assert not lt.none


def test_a_filter_without_lift_runs_what_it_would_discard(tmp_path):
    # a model trained on coin-flip labels for Add rejects about half of its
    # inputs at random: once the explored rejects pass about as often as the
    # accepted inputs, predicted-invalid inputs run (bypass)
    # instead of being discarded; --no-lift-check keeps discarding
    from acetest_ml.campaign import CampaignConfig, resolve
    from acetest_ml.solve.sampler import Sampler
    from acetest_ml.store import Store
    api = "tf.raw_ops.Add"
    spec, problems, _ = resolve(CampaignConfig(apis=[api], out=str(tmp_path / "t")), api)
    sampler = Sampler(problems, 7)
    xs = [sampler.next() for _ in range(120)]
    ys = [int(v) for v in np.random.RandomState(0).randint(0, 2, size=120)]
    train_model(spec, xs, ys, "lightgbm", {"num_threads": 1, "min_data_in_leaf": 3}, 0.5).save(tmp_path / "m")
    models = tmp_path / "models.yaml"
    models.write_text(yaml.safe_dump({"models_dir": "m", "apis": {api: {"threshold": 0.5}}}))
    args = ["campaign", "--api", api, "--budget", "80", "--seed", "3", "--no-progress", "--jobs", "1",
            "--ml-filter", "--models", str(models), "--exploration", "0.12", "--explore-band", "1"]
    on, off = str(tmp_path / "on"), str(tmp_path / "off")
    assert main(args + ["--out", on]) == 0
    assert main(args + ["--out", off, "--no-lift-check"]) == 0
    rows = candidates(on, "idx, decision, outcome", order="idx")
    first = min(i for i, d, o in rows if d == "bypass")
    assert all(d != "discard" for i, d, o in rows if i > first)
    s_on = json.load(open(os.path.join(on, "summary.json")))["apis"][api]
    s_off = json.load(open(os.path.join(off, "summary.json")))["apis"][api]
    assert s_on["filter"]["bypass_runs"] > 10 and s_on["filter"]["lift"]["no_lift"] is True
    assert s_off["filter"]["bypass_runs"] == 0 and s_off["filter"]["discarded"] > 10
    assert s_on["filter"]["candidates_per_exec"] < s_off["filter"]["candidates_per_exec"]
    # the verdict is rebuilt from the store (a resumed campaign starts where it stopped)
    from acetest_ml.filter import make_filter
    cfg = CampaignConfig(apis=[api], out=on, ml_filter="offline", models=str(models), seed=3)
    with Store(on, create=False) as st:
        f = make_filter(cfg, spec, st)
    assert f.lift.none and f.lift.info()["accepted_runs"] == s_on["filter"]["lift"]["accepted_runs"]
