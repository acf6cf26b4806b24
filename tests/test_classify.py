"""Classifier kinds, ValidityModel persistence, training helper, metrics and
the models.yaml registry, on a synthetic but realistic Conv2D task: labels
follow TensorFlow's Conv2D input checks (ranks, strides, channels, padding)."""
import json
import random
import time
from pathlib import Path

import numpy as np
import pytest

from acetest_ml.classify import (KINDS, HistGBKind, LightGBMKind, ModelFileError, ModelRegistry,
                                 RandomForestKind, TooFewExamples, ValidityModel, best_threshold,
                                 classification_metrics, get_kind, safe_name, train_model)
from acetest_ml.errors import ConfigError, UserError
from acetest_ml.features import FeatureSchema, SchemaMismatchError
from acetest_ml.model import (BOOL, DTYPE, INT, INT_LIST, STR, TENSOR, AbstractInput, ApiSpec,
                              ArgSpec, DTypeValue, TensorDesc)

REPO = Path(__file__).resolve().parents[1]
TF_T = ["float16", "bfloat16", "float32", "float64", "int32"]
API = "tf.raw_ops.Conv2D"

from test_features import tf_conv2d_spec  # noqa: E402  (tests/ is on sys.path under pytest)


conv2d_spec = tf_conv2d_spec  # the same hand-built Conv2D spec as the feature tests


def conv2d_valid(ai):
    """TensorFlow's Conv2D shape checks (NHWC, no dilation) as a label rule."""
    a = ai.args
    i, f, s = a["input"].shape, a["filter"].shape, a["strides"]
    ep = a.get("explicit_paddings", [])
    if len(i) != 4 or len(f) != 4:
        return False
    if len(s) != 4 or s[0] != 1 or s[3] != 1:
        return False
    if i[3] != f[2]:
        return False
    if a["padding"] == "EXPLICIT":
        if len(ep) != 8:
            return False
    elif ep:
        return False
    if a["padding"] == "VALID" and (i[1] < f[0] or i[2] < f[1]):
        return False
    return True


def conv2d_inputs(n, seed):
    rng = random.Random(seed)
    out, labels = [], []
    for _ in range(n):
        ishape = [rng.randint(1, 8) for _ in range(4 if rng.random() < 0.8 else rng.choice([3, 5]))]
        fshape = [rng.randint(1, 5) for _ in range(4 if rng.random() < 0.85 else rng.choice([2, 3]))]
        if len(ishape) >= 4 and len(fshape) >= 3 and rng.random() < 0.6:
            fshape[2] = ishape[3]
        strides = [rng.randint(1, 3) for _ in range(4 if rng.random() < 0.85 else rng.choice([2, 3]))]
        if rng.random() < 0.7:
            strides[0] = strides[-1] = 1
        padding = rng.choice(["SAME", "VALID", "EXPLICIT"])
        dt = rng.choice(["float32", "float64"])
        args = {"input": TensorDesc(dt, tuple(ishape)), "filter": TensorDesc(dt, tuple(fshape)),
                "strides": strides, "padding": padding, "T": DTypeValue(dt)}
        if padding == "EXPLICIT" or rng.random() < 0.2:
            args["explicit_paddings"] = [rng.randint(0, 2)
                                         for _ in range(8 if rng.random() < 0.7 else 4)]
        ai = AbstractInput(API, args, value_seed=rng.randrange(1 << 30))
        out.append(ai)
        labels.append(conv2d_valid(ai))
    return out, labels


@pytest.fixture(scope="module")
def data():
    train = conv2d_inputs(600, seed=1)
    test = conv2d_inputs(400, seed=2)
    return conv2d_spec(), train, test


@pytest.fixture(scope="module")
def trained(data):
    spec, (X, y), _ = data
    return {k: train_model(spec, X, y, kind=k) for k in ("lightgbm", "hist_gb", "random_forest")}


@pytest.mark.parametrize("kind", ["lightgbm", "hist_gb", "random_forest"])
def test_kind_learns_conv2d_validity_and_round_trips(kind, data, trained, tmp_path):
    spec, (X, y), (Xt, yt) = data
    assert 0.1 < np.mean(y) < 0.5  # realistic: most generated inputs are invalid
    m = trained[kind]
    assert isinstance(m.classifier, KINDS[kind]) and m.kind == kind
    assert m.counts["n"] == 600 and m.counts["valid"] == sum(y)
    assert m.metrics["validation"]["n"] > 50

    t0 = time.perf_counter()
    p = m.score_batch(Xt)
    us = (time.perf_counter() - t0) / len(Xt) * 1e6
    met = classification_metrics(yt, p, m.threshold)
    print(f"\n{kind}: held-out balanced_accuracy={met['balanced_accuracy']:.3f} "
          f"accuracy={met['accuracy']:.3f} precision={met['precision']:.3f} "
          f"recall={met['recall']:.3f} auc={met['roc_auc']:.3f}; scoring {us:.1f} us/candidate")
    assert met["balanced_accuracy"] > 0.9
    assert met["roc_auc"] > 0.95
    mask = m.accept_mask(Xt)
    assert mask.dtype == bool and (mask == (p >= m.threshold)).all()

    side = m.save(tmp_path)
    assert side == tmp_path / f"{API}.json"
    model_file = tmp_path / (API + KINDS[kind].suffix)
    assert model_file.is_file()
    if kind == "lightgbm":
        assert model_file.read_text().startswith("tree")  # LightGBM's text format
    doc = json.loads(side.read_text())
    assert doc["kind"] == kind and doc["threshold"] == m.threshold
    assert doc["schema"]["names"] == m.schema.names
    for path in (side, model_file, tmp_path / API):
        back = ValidityModel.load(path, spec)
        assert type(back.classifier) is KINDS[kind]
        np.testing.assert_array_equal(back.score_batch(Xt), p)
    assert back.counts == m.counts and back.metrics == json.loads(json.dumps(m.metrics))


def test_training_is_deterministic(data):
    spec, (X, y), (Xt, _) = data
    a = train_model(spec, X, y, kind="lightgbm", params={"num_iterations": 30})
    b = train_model(spec, X, y, kind="lightgbm", params={"num_iterations": 30})
    np.testing.assert_array_equal(a.score_batch(Xt), b.score_batch(Xt))


def test_relational_features_matter(data):
    """Without relations (base features only) the same learner does worse."""
    spec, (X, y), (Xt, yt) = data
    full = FeatureSchema.for_spec(spec)
    base = FeatureSchema.for_spec(spec, max_features=66)
    y, yt = np.array(y, int), np.array(yt, int)
    scores = {}
    for name, s in (("full", full), ("base", base)):
        k = LightGBMKind().fit(s.matrix(X), y, {"num_iterations": 100})
        scores[name] = classification_metrics(yt, k.predict_valid(s.matrix(Xt)))["balanced_accuracy"]
    assert scores["full"] > scores["base"] + 0.03


def test_too_few_examples(data):
    spec, (X, y), _ = data
    invalid_only = [ai for ai, ok in zip(X, y) if not ok][:50]
    valid_some = [ai for ai, ok in zip(X, y) if ok][:4]
    with pytest.raises(TooFewExamples) as ei:
        train_model(spec, invalid_only + valid_some, [0] * 50 + [1] * 4, min_per_class=10)
    e = ei.value
    assert (e.n_valid, e.n_invalid, e.min_per_class) == (4, 50, 10)
    assert not isinstance(e, UserError)


def test_auto_threshold(data):
    spec, (X, y), (Xt, yt) = data
    m = train_model(spec, X, y, kind="lightgbm", params={"num_iterations": 60}, threshold="auto")
    assert 0.0 < m.threshold < 1.0
    assert m.metrics["validation"]["threshold"] == m.threshold
    assert best_threshold(np.array([0, 0, 1, 1]), np.array([0.1, 0.3, 0.35, 0.9])) == \
        pytest.approx(0.325)
    with pytest.raises(ValueError):
        train_model(spec, X, y, threshold="high")
    # "precision": the most precise cut that keeps half the valid examples
    # (out of fold), so at least as high as the balanced-accuracy one here
    mp = train_model(spec, X, y, kind="lightgbm", params={"num_iterations": 60}, threshold="precision")
    assert m.threshold <= mp.threshold < 1.0
    assert mp.metrics["validation"]["recall"] >= 0.5
    assert mp.metrics["validation"]["precision"] >= m.metrics["validation"]["precision"]


def test_metrics_by_hand():
    y = [1, 1, 1, 0, 0, 0, 0, 0]
    p = [0.9, 0.8, 0.2, 0.7, 0.1, 0.1, 0.3, 0.05]
    m = classification_metrics(y, p, 0.5)
    # tp=2 fn=1 fp=1 tn=4
    assert m["accuracy"] == pytest.approx(6 / 8)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 4 / 5) / 2)
    assert m["roc_auc"] == pytest.approx(13 / 15)  # 13 of 15 (pos, neg) pairs ordered
    assert (m["n"], m["n_pos"]) == (8, 3)
    one = classification_metrics([0, 0, 0], [0.1, 0.6, 0.2], 0.5)
    assert one["roc_auc"] is None and one["recall"] is None and one["precision"] == 0.0
    assert one["balanced_accuracy"] == pytest.approx(2 / 3)
    none_pred = classification_metrics([1, 0], [0.1, 0.2], 0.5)
    assert none_pred["precision"] is None and none_pred["recall"] == 0.0


def test_schema_mismatch_refused(trained, tmp_path):
    side = trained["lightgbm"].save(tmp_path)
    spec2 = conv2d_spec()
    spec2.args.append(ArgSpec("extra_attr", INT))
    with pytest.raises(SchemaMismatchError) as ei:
        ValidityModel.load(side, spec2)
    assert str(side) in str(ei.value) and "retrain" in str(ei.value)
    spec3 = conv2d_spec()
    spec3.arg("padding").allowed = ["VALID", "SAME", "EXPLICIT"]  # index meaning changed
    with pytest.raises(SchemaMismatchError):
        ValidityModel.load(side, spec3)
    # the stored feature version is checked too
    doc = json.loads(side.read_text())
    doc["schema"]["version"] = 0
    side.write_text(json.dumps(doc))
    with pytest.raises(SchemaMismatchError, match="version"):
        ValidityModel.load(side)


@pytest.mark.parametrize("kind", ["lightgbm", "random_forest"])
def test_corrupt_files_refused(kind, trained, tmp_path):
    side = trained[kind].save(tmp_path)
    model_file = tmp_path / (API + KINDS[kind].suffix)
    good = model_file.read_bytes()

    model_file.write_bytes(good[: len(good) // 2])
    with pytest.raises(ModelFileError, match="corrupt") as ei:
        ValidityModel.load(side)
    assert str(model_file) in str(ei.value)

    # garbage whose checksum was also updated: the kind's own reader refuses it
    model_file.write_bytes(b"\x00garbage\xff" * 10)
    doc = json.loads(side.read_text())
    import hashlib
    doc["model_sha256"] = hashlib.sha256(model_file.read_bytes()).hexdigest()
    side.write_text(json.dumps(doc))
    with pytest.raises(UserError) as ei:
        ValidityModel.load(side)
    assert str(model_file) in str(ei.value)

    model_file.unlink()
    with pytest.raises(ModelFileError, match="not found"):
        ValidityModel.load(side)
    side.write_text("{not json")
    with pytest.raises(ModelFileError, match="JSON") as ei:
        ValidityModel.load(side)
    assert str(side) in str(ei.value)
    with pytest.raises(ModelFileError, match="not found"):
        ValidityModel.load(tmp_path / "nothing.json")


def test_kind_registry_and_params():
    assert set(KINDS) >= {"lightgbm", "hist_gb", "random_forest"}
    assert get_kind("hist_gb") is HistGBKind
    with pytest.raises(KeyError, match="known"):
        get_kind("svm")
    with pytest.raises(ValueError, match="num_leavs"):
        LightGBMKind.check_params({"num_leavs": 3})
    with pytest.raises(ValueError, match="num_leaves"):
        LightGBMKind.check_params({"num_leaves": "many"})
    with pytest.raises(ValueError, match="max_iterr"):
        HistGBKind.check_params({"max_iterr": 3})
    with pytest.raises(ValueError, match="n_estimators"):
        RandomForestKind.check_params({"n_estimators": -2})
    RandomForestKind.check_params({"n_estimators": 10, "class_weight": "balanced"})
    assert safe_name("torch.ops.aten.add.Tensor") == "torch.ops.aten.add.Tensor"
    assert "/" not in safe_name("a/b c")


# --------------------------------------------------------------------------- models.yaml

YAML = """\
default:
  kind: {kind}
  threshold: 0.5
  params: {{}}
kind_params:
  lightgbm: {{num_iterations: 40, num_leaves: 15}}
  random_forest: {{n_estimators: 40}}
models_dir: trained
apis:
  tf.raw_ops.Relu:
    kind: hist_gb
    threshold: 0.7
    params: {{max_iter: 20}}
"""


def test_yaml_kind_swap(data, tmp_path):
    spec, (X, y), (Xt, _) = data
    cfg = tmp_path / "models.yaml"
    cfg.write_text(YAML.format(kind="lightgbm"))
    reg = ModelRegistry.load(cfg)
    c = reg.config_for(API)
    assert c.kind == "lightgbm" and c.params["num_iterations"] == 40
    assert c.params["num_threads"] == 1  # built-in default kept
    assert c.model_path == tmp_path / "trained" / f"{API}.json"
    assert reg.model_for(API, spec) is None
    relu = reg.config_for("tf.raw_ops.Relu")
    assert relu.kind == "hist_gb" and relu.threshold == 0.7 and relu.params["max_iter"] == 20
    assert "num_leaves" not in relu.params

    m = reg.train(spec, X, y)
    loaded = reg.model_for(API, spec)
    assert isinstance(loaded.classifier, LightGBMKind)
    np.testing.assert_array_equal(loaded.score_batch(Xt), m.score_batch(Xt))

    # the one-line swap
    cfg.write_text(YAML.format(kind="random_forest"))
    reg = ModelRegistry.load(cfg)
    assert reg.config_for(API).kind == "random_forest"
    assert isinstance(reg.new_classifier(API), RandomForestKind)
    with pytest.raises(ModelFileError, match="retrain"):
        reg.model_for(API, spec)  # the saved model was trained with the old kind
    reg.train(spec, X, y)
    loaded = reg.model_for(API, spec)
    assert isinstance(loaded.classifier, RandomForestKind)
    assert loaded.classifier.estimator.n_estimators == 40


def test_shipped_models_yaml_loads(tmp_path, monkeypatch):
    from acetest_ml.settings import DEFAULT_MODELS
    assert Path(DEFAULT_MODELS) == REPO / "acetest_ml" / "configs" / "models.yaml"
    monkeypatch.chdir(tmp_path)
    reg = ModelRegistry.load(DEFAULT_MODELS)
    c = reg.config_for(API)
    assert c.kind == "lightgbm" and c.threshold == "auto"
    # the packaged registry keeps models in ./models of the current folder,
    # never inside the installed package
    assert c.model_path.parent == tmp_path / "models"
    assert ModelRegistry.load(DEFAULT_MODELS, tmp_path / "m2").config_for(API).model_path.parent \
        == tmp_path / "m2"
    for kind in ("hist_gb", "random_forest"):
        assert kind in reg.kind_params


def test_kind_override_takes_that_kinds_params():
    """``train --kind hist_gb`` with a LightGBM default: hist_gb's own kind_params
    apply, none of LightGBM's (which scikit-learn would refuse)."""
    from acetest_ml.settings import DEFAULT_MODELS
    reg = ModelRegistry.load(DEFAULT_MODELS)
    c = reg.config_for(API, "hist_gb")
    assert c.kind == "hist_gb"
    assert c.params["max_iter"] == reg.kind_params["hist_gb"]["max_iter"]
    assert c.params == {**HistGBKind.default_params(), **reg.kind_params["hist_gb"]}
    assert not {"num_iterations", "num_leaves", "min_data_in_leaf", "is_unbalance"} & set(c.params)
    HistGBKind().check_params(c.params)
    with pytest.raises(ConfigError, match="no_such"):
        reg.config_for(API, "no_such")


@pytest.mark.parametrize("text, key, problem", [
    ("default: {kind: lightgbm\n  threshold: [", "line", "invalid YAML"),
    ("default: {kind: xgboost}\n", "default.kind", "unknown classifier kind 'xgboost'"),
    ("apis:\n  tf.raw_ops.Relu: {kind: svm}\n", "apis.tf.raw_ops.Relu.kind", "unknown classifier"),
    ("apis:\n  tf.raw_ops.Relu: {kindd: lightgbm}\n", "apis.tf.raw_ops.Relu.kindd", "unknown key"),
    ("default: {kind: lightgbm, treshold: 0.5}\n", "default.treshold", "unknown key"),
    ("modelsdir: x\n", "modelsdir", "unknown key"),
    ("default: {threshold: high}\n", "default.threshold", "expected a number"),
    ("default: {threshold: 1.5}\n", "default.threshold", "expected a number"),
    ("default: {params: [1, 2]}\n", "default.params", "expected a mapping"),
    ("default: {params: {num_leaves: many}}\n", "default.params", "num_leaves"),
    ("apis:\n  X: {params: {num_leavs: 3}}\n", "apis.X.params", "num_leavs"),
    ("kind_params: {random_forest: {n_estimators: x}}\n", "kind_params.random_forest",
     "n_estimators"),
    ("models_dir: 3\n", "models_dir", "expected a non-empty path"),
    ("- a\n- b\n", "(top level)", "expected a mapping"),
])
def test_bad_yaml_is_config_error(text, key, problem, tmp_path):
    cfg = tmp_path / "models.yaml"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as ei:
        ModelRegistry.load(cfg)
    msg = str(ei.value)
    assert "\n" not in msg
    assert str(cfg) in msg and key in msg and problem in msg


def test_missing_yaml_is_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        ModelRegistry.load(tmp_path / "absent.yaml")


def test_registry_takes_the_precision_threshold_policy(tmp_path):
    cfg = tmp_path / "models.yaml"
    cfg.write_text("default: {kind: lightgbm, threshold: precision}\napis:\n  X: {threshold: auto}\n")
    reg = ModelRegistry.load(cfg)
    assert reg.config_for(API).threshold == "precision" and reg.config_for("X").threshold == "auto"
