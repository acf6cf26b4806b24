"""One labelling rule and one online learner for the campaign's online
filter, the upstream hook and the train / eval datasets."""
from __future__ import annotations

import json
import os

import pytest

from acetest_ml.classify import TooFewExamples
from acetest_ml.filter import OnlineFilter
from acetest_ml.learner import Label, OnlineLearner, is_valid, label_of
from acetest_ml.model import AbstractInput, ApiSpec, ArgSpec, TensorDesc
from acetest_ml.store import Store
from acetest_ml.train import datasets
from acetest_ml.upstream import convert, hook

from helpers import STANDIN, STANDIN_SRC as SRC, standin_modules

API = "tf.raw_ops.BiasAdd"
#: what a campaign (and upstream) may report, in an order that mixes them
SEQUENCE = ["pass", "invalid", "crash", "timeout", "skipped", "invalid", "pass", "timeout",
            "crash", "oom", "invalid"]


def test_the_rule():
    assert label_of("pass") is Label.PASS and label_of("invalid") is Label.INVALID
    assert label_of("crash") is Label.CRASH and label_of("timeout") is Label.CRASH
    for other in ("skipped", "oom", "unsupported", "unknown", None):
        assert label_of(other) is None
    assert [is_valid(y) for y in Label] == [False, True, True]


up = pytest.fixture(scope="module", name="up")(standin_modules)


def _hook_labels(up, tmp_path, outcomes):
    """Labels the hook's learner gives when upstream's runner counts ``outcomes``."""
    opt = up.Option.TestOption()
    opt.test_round = 100
    opt.work_path = str(tmp_path / "work")
    cwd = os.getcwd()
    os.chdir(SRC)
    try:
        opt.initialize()
    finally:
        os.chdir(cwd)
    with open(STANDIN / "Tester" / "data" / "tensorflow" / "op_json" / "BiasAdd.json") as f:
        props = json.load(f)
    args = [up.Argument.Argument(name, p) for name, p in props.items()]
    seen = []

    def trainer(spec, inputs, labels, config):
        seen.append(list(labels))
        return None

    h = hook.FilterHook(hook.FilterConfig(mode="online", warmup=1000, seed=0), trainer=trainer)
    h.install(up.APIManager.APIManager, up.Runner.Runner)
    counter = {"invalid": "invalid", "crash": "crash", "timeout": "timeout", "oom": "OOM"}
    inputs = []
    try:
        r = up.Runner.Runner(API, opt)
        manager = up.APIManager.APIManager(API, args, opt)
        manager._acetest_ml_runner = r
        for outcome in outcomes:
            manager.generate_random_args()
            inputs.append(convert.to_abstract_input(API, manager.arg_list, "tf"))
            if outcome in counter:
                attr = counter[outcome]
                setattr(r, attr, getattr(r, attr) + 1)
        r.terminate()
    finally:
        h.uninstall()
    flt = h.filters[API]
    assert isinstance(flt.learner, OnlineLearner)
    return flt.learner.labels, inputs


def _spec():
    return ApiSpec("tf.raw_ops.Fake", "tf", [ArgSpec("x", "tensor", dtypes=["float32"])])


def _ai(i):
    return AbstractInput("tf.raw_ops.Fake", {"x": TensorDesc("float32", (i % 5, 2))}, value_seed=i)


def test_crash_and_timeout_get_one_label_everywhere(up, tmp_path):
    expected = [int(label_of(o)) for o in SEQUENCE if label_of(o) is not None]
    assert expected.count(int(Label.CRASH)) == 4
    # the upstream hook ("skipped" is not an upstream outcome: it runs as a pass there)
    up_seq = [o for o in SEQUENCE if o != "skipped"]
    hook_labels, _ = _hook_labels(up, tmp_path, up_seq)
    assert hook_labels == expected
    # the campaign's online filter
    from acetest_ml.classify.registry import ModelConfig
    spec = _spec()
    flt = OnlineFilter(spec, ModelConfig(api="tf.raw_ops.Fake", kind="lightgbm", threshold=0.5), warmup=1000)
    for i, o in enumerate(SEQUENCE):
        flt.observe(_ai(i), o)
    assert flt.learner.labels == expected
    assert flt.info()["learner"]["crash"] == 4
    # the train / eval datasets read from a results store
    with Store(str(tmp_path / "runs")) as st:
        st.set_api_status(spec.name, "done", None, {"spec": spec.to_dict()})
        for i, o in enumerate(SEQUENCE):
            st.add(spec.name, 0, i, _ai(i), outcome=o)
        ds = datasets(st)[spec.name]
    assert ds.labels == expected
    assert (ds.crash, ds.timeout, ds.n_valid, ds.n_invalid) == (2, 2, 6, 3)


def test_schedule_retries_and_errors():
    calls = []

    def train(spec, inputs, labels):
        calls.append(len(labels))
        if len(labels) < 12:
            raise TooFewExamples(spec.name, 1, 1, 5)
        if len(labels) == 20:
            raise RuntimeError("boom")
        return ("model", len(labels))

    ln = OnlineLearner(_spec(), train, warmup=8, retrain_every=4, retrain_factor=1.5,
                       retry_after=4, min_per_class=2)
    for i in range(40):
        ln.observe(_ai(i), "invalid" if i % 3 == 0 else ("crash" if i % 7 == 0 else "pass"))
    # 8: declined (TooFewExamples) -> 12: trained -> max(16, 18) = 18: trained -> 27 -> ...
    assert calls[:3] == [8, 12, 18]
    assert ln.trained_at[:2] == [12, 18] and ln.model == ("model", ln.trained_at[-1])
    assert ln.info()["labelled"] == 40 and ln.info()["crash"] > 0
    # a class short of min_per_class: no call at all, retried after retry_after
    short = OnlineLearner(_spec(), train, warmup=4, retry_after=3, min_per_class=2)
    for i in range(6):
        short.observe(_ai(i), "pass")
    assert short.next_train_at == 7 and short.model is None


def test_trainer_error_keeps_previous_model():
    def train(spec, inputs, labels):
        if len(labels) >= 10:
            raise RuntimeError("boom")
        return len(labels)

    ln = OnlineLearner(_spec(), train, warmup=4, retrain_every=6, min_per_class=1)
    for i in range(12):
        ln.observe(_ai(i), "invalid" if i % 2 else "pass")
    assert ln.model == 4 and ln.train_errors == 1 and ln.last_error == "RuntimeError: boom"
