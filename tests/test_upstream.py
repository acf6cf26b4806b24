"""Tests of the runtime hook into the original ACETest Tester (acetest_ml.upstream).

The conversion, the regenerate loop, the outcome labelling and the runner are
tested against ``tests/upstream_standin``: a minimal stand-in written for these
tests that has upstream ACETest's module, class and method names
(``APIManager.APIManager.generate_random_args``, ``Runner.Runner.run`` /
``terminate``, the ``ArgumentValue`` value classes, ``Option.TestOption``, the
``main.py`` options and the ``output_<fw>_<round>/res.csv`` layout). It is not
upstream code; its runner executes the real TensorFlow op. Scorers are real
LightGBM models trained with ``acetest_ml.classify`` (plus one deterministic
scorer object where the test needs to know every score).

``test_real_upstream_online`` runs the real upstream Tester and only runs when
``ACETEST_HOME`` points to a checkout (with ``Tester/data/tensorflow``).
"""
from __future__ import annotations

import importlib
import importlib.util
import io
import json
import os
import random
import re
import shutil
import sys
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from acetest_ml.errors import ConfigError, UserError  # noqa: E402
from acetest_ml.model import AbstractInput, DTypeValue, TensorDesc  # noqa: E402
from acetest_ml.upstream import convert, hook, runner  # noqa: E402

from helpers import STANDIN, STANDIN_MODULES as _MODULES, STANDIN_SRC as SRC, standin_modules  # noqa: E402

API = "tf.raw_ops.BiasAdd"


#: the stand-in's modules, imported under upstream's top-level names
up = pytest.fixture(scope="module", name="up")(standin_modules)


def load_args(up):
    with open(STANDIN / "Tester" / "data" / "tensorflow" / "op_json" / "BiasAdd.json") as f:
        props = json.load(f)
    return [up.Argument.Argument(name, p) for name, p in props.items()]


def run_hooked(up, opt, h, seed, batches, rounds):
    """Upstream's Runner with hook ``h`` installed: ``batches`` managers of
    ``rounds`` rounds each after ``random.seed(seed)``; the runner and the
    hook's statistics file."""
    h.install(up.APIManager.APIManager, up.Runner.Runner)
    try:
        random.seed(seed)
        r = up.Runner.Runner(API, opt)
        for _ in range(batches):
            r.run(up.APIManager.APIManager(API, load_args(up), opt), rounds)
        r.terminate()
    finally:
        h.uninstall()
    return r, json.loads((Path(r.output_dir) / hook.STATS_FILE).read_text())


def make_option(up, tmp_path, test_round=100):
    opt = up.Option.TestOption()
    opt.test_round = test_round
    opt.work_path = str(tmp_path / "work")
    cwd = os.getcwd()
    os.chdir(SRC)  # the option's data paths are relative to Tester/src, like upstream's
    try:
        opt.initialize()
    finally:
        os.chdir(cwd)
    return opt


def bias_add_valid(ai: AbstractInput) -> bool:
    """BiasAdd's validation rule, written by hand: value rank >= 2, bias rank 1
    and bias size equal to the channel dimension."""
    value, bias = ai.args["value"], ai.args["bias"]
    if value.rank < 2 or bias.rank != 1:
        return False
    channel = value.shape[1] if ai.args["data_format"] == "NCHW" else value.shape[-1]
    return bias.shape[0] == channel


def draw(up, manager, n, spec=None):
    out = []
    for _ in range(n):
        manager.generate_random_args()
        out.append(convert.to_abstract_input(manager.api_name, manager.arg_list, "tf", spec))
    return out


def train_rule_model(up, spec, n=500, seed=0):
    """A real LightGBM ValidityModel trained on stand-in inputs labelled by the rule."""
    from acetest_ml.classify import train_model
    random.seed(seed)
    manager = up.APIManager.APIManager(API, load_args(up), None)
    inputs = draw(up, manager, n, spec)
    labels = [int(bias_add_valid(ai)) for ai in inputs]
    return train_model(spec, inputs, labels, "lightgbm", {"num_threads": 1}, 0.5), inputs, labels


# ------------------------------------------------------------------ conversion

def _arg(up, name, type_name, value, is_mid=False):
    a = up.Argument.Argument(name, {"type": type_name, "is_mid": is_mid})
    a.arg_value = value
    return a


def test_convert_every_upstream_value_kind(up):
    V = up.ArgumentValue
    args = [
        _arg(up, "T", "type", V.TypeValue("T", "tf.half"), is_mid=True),
        _arg(up, "value", "tensor", V.TensorValue("value", "tf.half", [2, 3], min_val=-8, max_val=8)),
        _arg(up, "perm", "tensor", V.TensorValue("perm", "tf.int32", [2], value=[1, 0])),
        _arg(up, "q", "tensor", V.TensorValue("q", "tf.qint8", [4])),
        _arg(up, "data_format", "string", V.StringValue("data_format", "NCHW")),
        _arg(up, "blob", "string", V.StringValue("blob", b"\xff\xd8x")),
        _arg(up, "opt", "int", V.IntValue("opt", "&NONE")),
        _arg(up, "axis", "int", V.IntValue("axis", -1)),
        _arg(up, "flag", "bool", V.BoolValue("flag", 1)),
        _arg(up, "alpha", "float", V.FloatValue("alpha", 3)),
        _arg(up, "ksize", "list", V.ListValue("ksize", [V.IntValue(None, 1), V.IntValue(None, 2), 7])),
        _arg(up, "tensors", "list", V.ListValue("tensors", [V.TensorValue(None, "tf.float64", [1, 5])])),
    ]
    ai = convert.to_abstract_input(API, args, "tf")
    assert ai.api == API
    assert ai.args == {
        "T": DTypeValue("float16"),
        "value": TensorDesc("float16", (2, 3), low=-8.0, high=8.0),
        "perm": TensorDesc("int32", (2,), values=(1, 0)),
        "q": TensorDesc("int8", (4,), low=-1024.0, high=1024.0),
        "data_format": "NCHW",
        "blob": "\xff\xd8x",
        "axis": -1,
        "flag": True,
        "alpha": 3.0,
        "ksize": [1, 2, 7],
        "tensors": [TensorDesc("float64", (1, 5), low=-1024.0, high=1024.0)],
    }
    assert "opt" not in ai.args  # "&NONE" = passed as None = left out
    assert isinstance(ai.args["alpha"], float)
    assert ai.origin["lossy_dtypes"] == ["tf.qint8"]
    assert AbstractInput.loads(ai.dumps()).args == ai.args


def test_convert_refuses_ungenerated_and_unknown_dtypes(up):
    V = up.ArgumentValue
    with pytest.raises(ValueError, match="no generated value"):
        convert.to_abstract_input(API, [_arg(up, "x", "int", None)], "tf")
    with pytest.raises(ValueError, match="unknown upstream dtype"):
        convert.to_abstract_input(API, [_arg(up, "x", "tensor", V.TensorValue("x", "tf.variant", [1]))], "tf")


def test_dtype_and_api_name_mapping():
    assert convert.upstream_dtype("tf.half") == ("float16", False)
    assert convert.upstream_dtype("double") == ("float64", False)
    assert convert.upstream_dtype("tf.quint8") == ("uint8", True)
    # upstream's PyTorch mode creates signed ints for unsigned TF spellings
    assert convert.upstream_dtype("tf.uint16", "torch") == ("int16", False)
    assert convert.upstream_dtype("tf.uint8", "torch") == ("int8", False)
    assert convert.upstream_dtype("tf.float32", "torch") == ("float32", False)
    assert convert.api_name("tf.raw_ops.Conv2D") == "tf.raw_ops.Conv2D"
    assert convert.api_name("torch.nn.functional.conv2d", "torch") == "torch.ops.aten.conv2d"
    assert convert.api_name("torch.linalg.det", "torch") == "torch.ops.aten.linalg_det"
    assert convert.api_name("torch.fft.fft_rfft", "torch") == "torch.ops.aten.fft_rfft"
    assert convert.api_name("torch._C._nn.gelu", "torch") == "torch.ops.aten.gelu"
    assert convert.api_name("torch.ops.aten.add.Tensor", "torch") == "torch.ops.aten.add.Tensor"


def test_spec_from_upstream_and_coercion(up):
    args = load_args(up)
    spec = convert.spec_from_upstream(API, args, "tf")
    assert [a.name for a in spec.args] == ["T", "data_format", "value", "bias"]
    t, fmt, value, bias = spec.args
    assert (t.kind, t.passed, t.dtypes) == ("dtype", False, ["float32", "float64", "float16"])
    assert (fmt.kind, fmt.allowed) == ("str", ["NHWC", "NCHW"])
    assert (value.kind, value.dtype_ref, value.min_rank, value.max_rank) == ("tensor", "T", 1, 4)
    assert spec.source == "acetest"
    # a tensor argument upstream passes as a Python list becomes a 1-D tensor
    V = up.ArgumentValue
    listed = _arg(up, "bias", "list", V.ListValue("bias", [V.IntValue(None, 4), V.IntValue(None, 5)]))
    ai = convert.to_abstract_input(API, [listed], "tf", spec)
    assert ai.args["bias"] == TensorDesc("int32", (2,), values=(4, 5))


# ------------------------------------------------------------------ the regenerate loop

def test_filter_keeps_predicted_valid_inputs_with_real_lightgbm(up):
    random.seed(11)
    baseline = draw(up, up.APIManager.APIManager(API, load_args(up), None), 200)
    base_rate = sum(map(bias_add_valid, baseline)) / len(baseline)

    spec = convert.spec_from_upstream(API, load_args(up), "tf")
    model, _, _ = train_rule_model(up, spec)

    def factory(models, api, got_spec):  # stands for the registry's model_for
        assert api == API and got_spec is None
        return model

    h = hook.FilterHook(hook.FilterConfig(mode="models", exploration=0.0, max_tries=20, seed=1),
                        scorer_factory=factory)
    h.install(up.APIManager.APIManager, up.Runner.Runner)
    try:
        random.seed(12)
        manager = up.APIManager.APIManager(API, load_args(up), None)
        kept = draw(up, manager, 200, None)
    finally:
        h.uninstall()
    assert up.APIManager.APIManager.generate_random_args.__name__ == "generate_random_args"
    assert not hasattr(up.APIManager.APIManager.generate_random_args, "__wrapped__")
    kept_rate = sum(map(bias_add_valid, kept)) / len(kept)
    assert base_rate < 0.6
    assert kept_rate >= 0.9 and kept_rate > base_rate + 0.3, (base_rate, kept_rate)
    st = h.stats()[API]
    assert st["runs"] == 200 and st["explored"] == 0
    assert st["generated"] == st["accepted"] + st["discarded"] + st["forced"] + st["explored"]
    assert st["generated"] > 200 and st["discarded"] > 0
    assert st["scored"] == st["generated"] and st["score_time_s"] > 0
    assert st["scorer"] == "registry"
    assert h.filters[API].spec is spec  # inputs are converted against the model's own spec


class RecordingScorer:
    """Deterministic scorer: P(valid) grows with the element count of ``value``;
    remembers every score it gave."""

    def __init__(self, threshold):
        self.threshold = threshold
        self.seen: list[float] = []

    def score_batch(self, inputs):
        import numpy as np
        out = np.array([min(1.0, ai.args["value"].numel / 1000.0) for ai in inputs])
        self.seen.extend(out.tolist())
        return out


def test_gives_up_after_max_tries_and_runs_best_candidate(up):
    scorer = RecordingScorer(threshold=2.0)  # nothing is ever predicted valid
    h = hook.FilterHook(hook.FilterConfig(mode="models", exploration=0.0, max_tries=5),
                        scorer_factory=lambda m, a, s: scorer)
    h.install(up.APIManager.APIManager, up.Runner.Runner)
    try:
        random.seed(3)
        manager = up.APIManager.APIManager(API, load_args(up), None)
        for _ in range(10):
            before = len(scorer.seen)
            manager.generate_random_args()
            scores = scorer.seen[before:]
            assert len(scores) == 5
            ai = convert.to_abstract_input(API, manager.arg_list, "tf")
            assert min(1.0, ai.args["value"].numel / 1000.0) == max(scores)  # the best one runs
    finally:
        h.uninstall()
    st = h.stats()[API]
    assert (st["generated"], st["forced"], st["discarded"], st["accepted"]) == (50, 10, 40, 0)


def test_exploration_share(up):
    def run(exploration, n=60):
        scorer = RecordingScorer(threshold=2.0)
        h = hook.FilterHook(hook.FilterConfig(mode="models", exploration=exploration, max_tries=4, seed=7,
                                              explore_band=5.0),
                            scorer_factory=lambda m, a, s: scorer)
        h.install(up.APIManager.APIManager, up.Runner.Runner)
        try:
            random.seed(5)
            manager = up.APIManager.APIManager(API, load_args(up), None)
            for _ in range(n):
                manager.generate_random_args()
        finally:
            h.uninstall()
        return h.stats()[API]

    every = run(1.0)
    assert (every["explored"], every["discarded"], every["generated"]) == (60, 0, 60)
    none = run(0.0)
    assert none["explored"] == 0 and none["forced"] == 60
    some = run(0.2)
    assert 0 < some["explored"] < 60
    assert some["generated"] == some["explored"] + some["discarded"] + some["forced"]


def test_bad_filter_settings_are_user_errors():
    for cfg in (hook.FilterConfig(mode="sometimes"), hook.FilterConfig(mode="online", exploration=1.5),
                hook.FilterConfig(mode="online", max_tries=0),
                hook.FilterConfig(mode="online", min_per_class=0), hook.FilterConfig(mode="online", retrain_every=0),
                hook.FilterConfig(mode="online", threshold="high"), hook.FilterConfig(mode="online", threshold=1.5),
                hook.FilterConfig(mode="models", models="/nonexistent/models.yaml")):
        with pytest.raises(ConfigError):
            cfg.validate()


# ------------------------------------------------------------------ outcomes and online training

def test_outcomes_are_read_from_the_runner_counters(up, tmp_path):
    opt = make_option(up, tmp_path)
    scorer = RecordingScorer(threshold=0.0)  # everything predicted valid
    h = hook.FilterHook(hook.FilterConfig(mode="models"), scorer_factory=lambda m, a, s: scorer)
    h.install(up.APIManager.APIManager, up.Runner.Runner)
    try:
        r = up.Runner.Runner(API, opt)
        manager = up.APIManager.APIManager(API, load_args(up), opt)
        manager._acetest_ml_runner = r
        manager.generate_random_args()
        r.crash += 1  # what upstream's runner does when the worker dies
        manager.generate_random_args()  # settles the previous run
        r.invalid += 1
        manager.generate_random_args()
        manager.generate_random_args()  # nothing counted: it passed
        r.terminate("Unsupported: need session.")  # upstream's give-up message
    finally:
        h.uninstall()
    st = json.loads((Path(r.output_dir) / hook.STATS_FILE).read_text())
    assert st["outcomes"] == {"accepted": {"crash": 1, "invalid": 1, "pass": 1, "unsupported": 1}}


def test_online_mode_trains_on_real_tensorflow_outcomes(up, tmp_path):
    opt = make_option(up, tmp_path, test_round=240)
    # rules off: the warm-up then runs unfiltered (learned rules are tested apart)
    h = hook.FilterHook(hook.FilterConfig(mode="online", warmup=40, seed=0, rules=False))
    r, st = run_hooked(up, opt, h, 1, 6, 40)
    assert st["runs"] == r.total_times == 240
    assert st["online"]["labelled"] == 240 and st["online"]["trainings"] >= 1
    assert st["online"]["trained_at"][0] >= 40 and st["unfiltered"] >= 40
    outcomes = st["outcomes"]
    assert sum(o.get("invalid", 0) for o in outcomes.values()) == r.invalid
    assert st["online"]["invalid"] == r.invalid

    def rate(d):
        return d.get("pass", 0) / sum(d.values())
    assert rate(outcomes["accepted"]) > rate(outcomes["unfiltered"]) + 0.2, outcomes
    assert (Path(opt.output_path) / "res.csv").read_text().count(API) == 1


# ------------------------------------------------------------------ runner

def test_runner_setup_errors(tmp_path, monkeypatch):
    monkeypatch.delenv("ACETEST_HOME", raising=False)
    with pytest.raises(UserError, match=r"ACETest checkout not found at .*: run git submodule update --init"):
        runner.locate_home(str(tmp_path / "nothing"))
    monkeypatch.setenv("ACETEST_HOME", str(STANDIN))
    assert runner.locate_home() == str(STANDIN)
    with pytest.raises(UserError, match="bad upstream option"):
        runner.parse_upstream_options(["--target_api=x", "--rounds=3"])
    assert runner.parse_upstream_options(["--target_api=x", "--test_round", "5"]) == \
        {"target_api": "x", "test_round": "5"}
    with pytest.raises(UserError, match="is not in"):
        runner.run_upstream(["--target_api=tf.raw_ops.Nope"], acetest_home=str(STANDIN))
    with pytest.raises(UserError, match="--target_api"):
        runner.run_upstream([], acetest_home=str(STANDIN))
    with pytest.raises(UserError, match="--compare needs --ml-filter"):
        runner.run_upstream([f"--target_api={API}"], compare=True, acetest_home=str(STANDIN))
    with pytest.raises(UserError, match="model registry file not found"):
        runner.run_upstream([f"--target_api={API}"], ml_filter=True, models=str(tmp_path / "m.yaml"),
                            acetest_home=str(STANDIN))
    nodata = tmp_path / "home"
    (nodata / "Tester" / "src").mkdir(parents=True)
    (nodata / "Tester" / "src" / "main.py").write_text("")
    with pytest.raises(UserError, match="ACETest data not found"):
        runner.run_upstream([f"--target_api={API}"], acetest_home=str(nodata))


def test_compare_needs_out(tmp_path, capsys):
    with pytest.raises(UserError, match="--compare needs --out"):
        runner.run_upstream([f"--target_api={API}"], ml_filter="online", compare=True,
                            models=str(tmp_path / "none.yaml"), acetest_home=str(STANDIN))
    from acetest_ml.cli import main
    # the command line: one line naming --out, exit 2, nothing written here
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        rc = main(["acetest", "--ml-filter=online", "--compare", "--acetest-home", str(STANDIN),
                   "--", f"--target_api={API}", "--test_round=5"])
    finally:
        os.chdir(cwd)
    assert rc == 2
    err = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
    assert len(err) == 1 and err[0].startswith("acetest-ml: error: --compare needs --out"), err
    assert os.listdir(tmp_path) == []
    taken = tmp_path / "taken"
    taken.write_text("x")
    rc = main(["acetest", "--ml-filter=online", "--compare", "--acetest-home", str(STANDIN),
               "--out", str(taken), "--", f"--target_api={API}", "--test_round=5"])
    assert rc == 2
    err = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
    assert len(err) == 1 and "--out" in err[0] and "taken" in err[0]
    assert taken.read_text() == "x"


def test_cli_arguments():
    import argparse
    p = runner.add_arguments(argparse.ArgumentParser())
    ns = p.parse_args(["--ml-filter", "--compare", "--out", "d", "--", "--target_api=x", "--test_round=5"])
    assert ns.ml_filter == "models" and ns.compare and ns.out_dir == "d"
    assert [a for a in ns.upstream_args if a != "--"] == ["--target_api=x", "--test_round=5"]
    with pytest.raises(UserError, match="unknown --ml-filter"):
        runner._normalise_filter("sometimes")
    assert runner._normalise_filter("offline") == "models" and runner._normalise_filter(None) is None
    ns = p.parse_args(["--ml-filter=online", "--", "--target_api=x"])
    assert ns.ml_filter == "online" and ns.exploration == 0.05


def test_res_csv_lines():
    row = runner.parse_res_line("tf.raw_ops.BiasAdd,cpu_ori,7.08,7,20,13,0,0,0,35.00%,0\n")
    assert (row["runs"], row["invalid"], row["mode"]) == (20, 13, "cpu_ori")
    assert runner.parse_res_line("api, mode, time, samples, times, invalid, crash, timeout, OOM, "
                                 "pass_rate, coverage") is None
    assert runner.parse_res_line("tf.raw_ops.X,gpu,Unsupported: need session.")["message"] == \
        "Unsupported: need session."


def test_compare_through_the_bootstrap_with_a_registry_model(up, tmp_path, monkeypatch):
    """models.yaml + a saved real LightGBM model; upstream (the stand-in main.py)
    runs in a subprocess twice: without and with the filter."""
    from acetest_ml.classify import ModelRegistry
    yaml_path = tmp_path / "models.yaml"
    yaml_path.write_text("default: {kind: lightgbm, threshold: 0.5}\n"
                         "kind_params: {lightgbm: {num_threads: 1, num_iterations: 100}}\n"
                         "models_dir: models\n")
    spec = convert.spec_from_upstream(API, load_args(up), "tf")
    reg = ModelRegistry.load(yaml_path)
    random.seed(0)
    inputs = draw(up, up.APIManager.APIManager(API, load_args(up), None), 500, spec)
    reg.train(spec, inputs, [int(bias_add_valid(ai)) for ai in inputs])
    assert reg.model_for(API, spec) is not None

    out = io.StringIO()
    work = tmp_path / "cmp"
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    code = runner.run_upstream([f"--target_api={API}", "--test_round=100"],
                               ml_filter="models", models=str(yaml_path), compare=True,
                               acetest_home=str(STANDIN), seed=5, out=out, log=str(tmp_path / "log.txt"),
                               out_dir=str(work))
    assert os.listdir(cwd) == []  # --out, not the current folder
    text = out.getvalue()
    assert code == 0, text + (tmp_path / "log.txt").read_text()[-3000:]
    rates = dict(re.findall(r"\[(baseline|filtered)\] upstream pass rate: ([\d.]+)%", text))
    assert set(rates) == {"baseline", "filtered"}
    assert float(rates["filtered"]) > float(rates["baseline"]) + 20, text
    assert "compare: upstream pass rate" in text
    st = json.loads((work / "filtered" / "output_tf_0" / API / hook.STATS_FILE).read_text())
    assert st["scorer"] == "registry" and st["runs"] == 100
    assert not (work / "baseline" / "output_tf_0" / API / hook.STATS_FILE).exists()

    # upstream skips an API whose output folder exists: reported, non-zero
    out2 = io.StringIO()
    code = runner.run_upstream([f"--target_api={API}", "--test_round=100", f"--work_path={work / 'baseline'}"],
                               acetest_home=str(STANDIN), out=out2, log=str(tmp_path / "log2.txt"))
    assert code == 1 and "wrote no results" in out2.getvalue()


def test_upstream_failure_is_reported(tmp_path):
    out = io.StringIO()
    code = runner.run_upstream([f"--target_api={API}", "--test_round=many", f"--work_path={tmp_path / 'w'}"],
                               acetest_home=str(STANDIN), out=out, log=str(tmp_path / "log.txt"))
    assert code == 1
    assert "exited with code 1" in out.getvalue()
    assert "ValueError" in (tmp_path / "log.txt").read_text()


# ------------------------------------------------------------------ the real upstream

@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("ACETEST_HOME"), reason="set ACETEST_HOME to a real ACETest checkout")
def test_real_upstream_online(tmp_path):
    real = Path(os.environ["ACETEST_HOME"])
    if importlib.util.find_spec("sysv_ipc") is None:
        pytest.skip("upstream's Runner imports sysv_ipc, which is not installed")
    data = real / "Tester" / "data" / "tensorflow"
    op = "BiasOp"
    # upstream rewrites its data files in place: run on a copy of what BiasAdd needs
    home = tmp_path / "ACETest"
    shutil.copytree(real / "Tester" / "src", home / "Tester" / "src")
    dst = home / "Tester" / "data" / "tensorflow"
    (dst / "op_json").mkdir(parents=True)
    shutil.copy(data / "API2OP.csv", dst / "API2OP.csv")
    shutil.copy(data / "op_json" / "BiasAdd.json", dst / "op_json" / "BiasAdd.json")
    if (data / "constraints" / op).is_dir():
        shutil.copytree(data / "constraints" / op, dst / "constraints" / op)
    else:
        (dst / "constraints").mkdir()
    out = io.StringIO()
    code = runner.run_upstream([f"--target_api={API}", "--test_round=30", "--mode=cpu_ori", "--framework=tf",
                                f"--work_path={tmp_path / 'w'}"], ml_filter="online", warmup=10, seed=1,
                               acetest_home=str(home), out=out, log=str(tmp_path / "log.txt"))
    assert code == 0, out.getvalue() + (tmp_path / "log.txt").read_text()[-3000:]
    assert "upstream pass rate" in out.getvalue()
    st = json.loads((tmp_path / "w" / "output_tf_0" / API / hook.STATS_FILE).read_text())
    assert st["runs"] == 30 and st["online"]["labelled"] + st["outcomes"].get("unfiltered", {}).get("oom", 0) <= 30
    assert st["online"]["labelled"] >= 25


def test_hook_work_leaves_upstream_random_streams_alone(up, tmp_path):
    """Upstream draws every choice from Python's and NumPy's global generators;
    our training (lightgbm's import draws from ``random``) must not shift them,
    or a filtered run diverges from the baseline before the filter acts."""
    import numpy as np

    random.seed(4)
    np.random.seed(4)
    expected = (random.random(), float(np.random.rand()))
    random.seed(4)
    np.random.seed(4)
    with hook.keep_global_rng():
        random.random()
        np.random.rand(10)
    assert (random.random(), float(np.random.rand())) == expected

    def sequence(install: bool, n=40):
        base = tmp_path / ("hooked" if install else "plain")
        base.mkdir()
        opt = make_option(up, base)
        trainings = []

        def trainer(spec, inputs, labels, config):  # draws like an import would, then declines
            trainings.append(len(labels))
            random.random()
            np.random.rand(5)
            return None

        # rules off: a learned rule would filter (and so change the draws) on purpose
        h = hook.FilterHook(hook.FilterConfig(mode="online", warmup=5, seed=0, rules=False), trainer=trainer)
        if install:
            h.install(up.APIManager.APIManager, up.Runner.Runner)
        try:
            random.seed(9)
            np.random.seed(9)
            r = up.Runner.Runner(API, opt)
            manager = up.APIManager.APIManager(API, load_args(up), opt)
            manager._acetest_ml_runner = r
            out = []
            for _ in range(n):
                manager.generate_random_args()
                ai = convert.to_abstract_input(API, manager.arg_list, "tf")
                if not bias_add_valid(ai):
                    r.invalid += 1  # what upstream's runner does for a rejected input
                out.append(ai.args)
        finally:
            h.uninstall()
        return out, trainings

    plain, _ = sequence(False)
    hooked, trainings = sequence(True)
    assert len(trainings) >= 2  # the trainer really ran (and drew) in between
    assert hooked == plain


def test_install_waits_for_upstreams_own_imports():
    """Without classes given, the hook patches upstream's modules as upstream
    imports them (importing them earlier would change upstream's import order)."""
    saved = {n: sys.modules.pop(n, None) for n in _MODULES}
    saved_path = list(sys.path)
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != str(SRC)]  # the module fixture may have added it
    scorer = RecordingScorer(threshold=0.0)
    h = hook.FilterHook(hook.FilterConfig(mode="models"), scorer_factory=lambda m, a, s: scorer)
    try:
        with pytest.raises(hook.UpstreamError, match="not found"):
            h.install()  # upstream's Tester/src is not on sys.path
        assert h.waiting_for == [] and not any(isinstance(f, hook._PatchOnImport) for f in sys.meta_path)
        sys.path.insert(0, str(SRC))
        h.install()
        assert h.waiting_for == ["APIManager", "Runner"]
        assert "APIManager" not in sys.modules and "Runner" not in sys.modules  # nothing imported yet
        manager_mod = importlib.import_module("APIManager")
        assert h.waiting_for == ["Runner"]
        assert hasattr(manager_mod.APIManager.generate_random_args, "__wrapped__")
        runner_mod = importlib.import_module("Runner")
        assert h.waiting_for == []
        assert not any(isinstance(f, hook._PatchOnImport) for f in sys.meta_path)
        assert hasattr(runner_mod.Runner.run, "__wrapped__") and hasattr(runner_mod.Runner.terminate, "__wrapped__")
        args = [importlib.import_module("Argument").Argument(n, p) for n, p in json.loads(
            (STANDIN / "Tester" / "data" / "tensorflow" / "op_json" / "BiasAdd.json").read_text()).items()]
        manager_mod.APIManager(API, args, None).generate_random_args()
        assert h.stats()[API]["accepted"] == 1 and len(scorer.seen) == 1
        h.uninstall()
        assert not hasattr(manager_mod.APIManager.generate_random_args, "__wrapped__")
    finally:
        h.uninstall()
        sys.path[:] = saved_path
        for n in _MODULES:
            sys.modules.pop(n, None)
            if saved[n] is not None:
                sys.modules[n] = saved[n]


def test_broken_registry_yaml_fails_before_upstream_starts(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("default: {kind: lightgbm, threshold: [0.5\n")
    for mode in (True, "online"):
        with pytest.raises(ConfigError, match="bad.yaml"):
            runner.run_upstream([f"--target_api={API}", "--test_round=10", f"--work_path={tmp_path / 'w'}"],
                                ml_filter=mode, models=str(bad), acetest_home=str(STANDIN), out=io.StringIO(),
                                log=str(tmp_path / "log.txt"))
    assert not (tmp_path / "w").exists() and not (tmp_path / "log.txt").exists()  # upstream never started


# ------------------------------------------------------------------ per-sample round reallocation

class RankScorer:
    """P(valid) 0.9 when ``value`` has rank >= 2 (BiasAdd's first rule), else 0.1."""

    threshold = 0.5

    def score_batch(self, inputs):
        import numpy as np
        return np.array([0.9 if ai.args["value"].rank >= 2 else 0.1 for ai in inputs])


def rank_one_sample(up):
    """Arguments of a solver sample that fixes ``value`` to rank 1: BiasAdd
    rejects every fill of it."""
    args = load_args(up)
    value = next(a for a in args if a.name == "value")
    value.arg_prop.min_ndim = value.arg_prop.max_ndim = 1
    return args


def test_rounds_move_off_a_rejected_sample_and_the_total_is_kept(up, tmp_path):
    import numpy as np

    def campaign(reallocate: bool):
        base = tmp_path / ("realloc" if reallocate else "plain")
        base.mkdir()
        opt = make_option(up, base, test_round=125)
        h = hook.FilterHook(hook.FilterConfig(mode="models", exploration=0.2, max_tries=5, seed=0,
                                              reallocate=reallocate, probes=3),
                            scorer_factory=lambda m, a, s: RankScorer())
        h.install(up.APIManager.APIManager, up.Runner.Runner)
        per_sample = []
        try:
            random.seed(2)
            np.random.seed(2)
            r = up.Runner.Runner(API, opt)
            for bad in (True, False, True, False, True):  # upstream's order: rejected, accepted, ...
                args = rank_one_sample(up) if bad else load_args(up)
                before = r.total_times
                r.run(up.APIManager.APIManager(API, args, opt), 25)
                per_sample.append(r.total_times - before)
            before = r.total_times
            r.terminate()
            per_sample.append(r.total_times - before)  # rounds still banked at the end
        finally:
            h.uninstall()
        return r, per_sample, h.stats()[API]

    r, per_sample, st = campaign(True)
    assert r.total_times == 125  # upstream's round count is kept
    # a rejected sample keeps its exploration share (0.2 x 25), the rest goes to the
    # next accepted one; what the last rejected sample gives up is spent at the end
    assert per_sample == [5, 45, 5, 45, 5, 20], per_sample
    assert (st["samples_scored"], st["samples_rejected"], st["rounds_moved"]) == (5, 3, 60)
    assert st["rounds_spent_at_end"] == 20
    # the share of the rejected samples runs as drawn (plus per-input exploration)
    assert sum(st["outcomes"]["explored"].values()) >= 15
    plain_r, plain, plain_st = campaign(False)
    assert plain == [25, 25, 25, 25, 25, 0] and plain_r.total_times == 125
    assert plain_st["samples_scored"] == 0
    assert r.invalid < plain_r.invalid


def test_probing_a_sample_leaves_upstreams_random_draws_alone(up, tmp_path):
    """Scoring a solver sample draws fills from upstream's generator; the
    draws upstream then makes for the sample are the ones it made unhooked."""
    def draws(install: bool):
        h = hook.FilterHook(hook.FilterConfig(mode="models", exploration=1.0, probes=4, seed=0),
                            scorer_factory=lambda m, a, s: RankScorer())
        if install:
            h.install(up.APIManager.APIManager, up.Runner.Runner)
        manager = up.APIManager.APIManager(API, load_args(up), None)
        try:
            random.seed(8)
            if install:
                hook._Reallocator().plan(h.filter_for(API, "tf"), manager, 10)
            out = []
            for _ in range(5):
                up.APIManager.APIManager.generate_random_args.__wrapped__(manager) if install \
                    else manager.generate_random_args()
                out.append(convert.to_abstract_input(API, manager.arg_list, "tf").args)
        finally:
            h.uninstall()
        return out, h
    plain, _ = draws(False)
    hooked, h = draws(True)
    assert hooked == plain
    assert h.stats()[API]["samples_scored"] == 1 and h.stats()[API]["scored"] == 4


# ------------------------------------------------------------------ --collect

def test_collect_writes_a_store_that_train_accepts(up, tmp_path):
    from acetest_ml import cli
    from acetest_ml.store import Store
    from acetest_ml.train import train_all

    collect = tmp_path / "collected"
    out = io.StringIO()
    code = runner.run_upstream([f"--target_api={API}", "--test_round=200", f"--work_path={tmp_path / 'w'}"],
                               acetest_home=str(STANDIN), seed=3, collect=str(collect), out=out,
                               log=str(tmp_path / "log.txt"))
    assert code == 0, out.getvalue() + (tmp_path / "log.txt").read_text()[-3000:]
    with Store(str(collect), create=False) as store:
        assert store.apis() == [API]
        counts = store.outcome_counts(API)
        recs = list(store.records(API))
        status = store.api_statuses()[API]
    assert len(recs) == 200 and counts["pass"] + counts["invalid"] == 200
    row = next(r for line in (tmp_path / "w" / "output_tf_0" / "res.csv").read_text().splitlines()
               if (r := runner.parse_res_line(line)) and "runs" in r)
    assert counts["invalid"] == row["invalid"]  # the same labels as upstream's own counters
    invalid = [r for r in recs if r.outcome == "invalid"]
    assert all(r.message for r in invalid)  # upstream's exception text, from its invalid.log
    assert any("bias" in r.message.lower() or "rank" in r.message.lower() or "dimension" in r.message.lower()
               for r in invalid)
    assert status["info"]["source"] == "acetest-upstream"
    assert recs[0].input.origin["source"] == "acetest-upstream"
    # each run names upstream's solver sample it came from, in upstream's order
    samples = [r.input.origin.get("sample") for r in recs]
    assert all(isinstance(x, int) for x in samples) and samples == sorted(samples), samples[:20]

    yaml_path = tmp_path / "models.yaml"
    yaml_path.write_text("default: {kind: lightgbm, threshold: 0.5}\n"
                         "kind_params: {lightgbm: {num_threads: 1, num_iterations: 100}}\n"
                         "models_dir: models\n")
    rep = train_all(str(collect), str(yaml_path))
    assert rep[API]["status"] == "trained", rep
    # the command line accepts the folder too
    assert cli.main(["train", "--runs", str(collect), "--models", str(yaml_path)]) == 0
    # and the offline hook filters with the model trained on upstream's own runs
    out = io.StringIO()
    code = runner.run_upstream([f"--target_api={API}", "--test_round=100", f"--work_path={tmp_path / 'cmp'}"],
                               ml_filter="models", models=str(yaml_path), compare=True, seed=4,
                               acetest_home=str(STANDIN), out=out, log=str(tmp_path / "log2.txt"))
    assert code == 0, out.getvalue()
    rates = dict(re.findall(r"\[(baseline|filtered)\] upstream pass rate: ([\d.]+)%", out.getvalue()))
    assert float(rates["filtered"]) > float(rates["baseline"]) + 15, out.getvalue()


def test_collect_folder_errors(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(UserError, match="is a file"):
        runner.run_upstream([f"--target_api={API}"], acetest_home=str(STANDIN), collect=str(f))
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "runs.sqlite").write_text("not a database" * 100)
    with pytest.raises(UserError, match="not a usable SQLite"):
        runner.run_upstream([f"--target_api={API}"], acetest_home=str(STANDIN), collect=str(bad))


# ------------------------------------------------------------------ PyTorch mode

def test_torch_mode_through_the_hook(tmp_path):
    """Upstream's ``--framework=torch`` (data in Tester/data/torch as the ncsu-swat
    fork keeps it; op_json named after the API2OP.csv op, torch.add -> binary):
    the online hook learns from real PyTorch outcomes and --collect records them
    under our aten name."""
    from acetest_ml.store import Store
    assert runner.data_dir(str(STANDIN), "torch").endswith(os.path.join("data", "torch"))
    collect = tmp_path / "collected"
    out = io.StringIO()
    code = runner.run_upstream(["--framework=torch", "--target_api=torch.add", "--test_round=160",
                                f"--work_path={tmp_path / 'w'}"], ml_filter="online", warmup=40, seed=2,
                               acetest_home=str(STANDIN), collect=str(collect), out=out,
                               log=str(tmp_path / "log.txt"))
    assert code == 0, out.getvalue() + (tmp_path / "log.txt").read_text()[-3000:]
    st = json.loads((tmp_path / "w" / "output_torch_0" / "torch.add" / hook.STATS_FILE).read_text())
    assert st["framework"] == "torch" and st["runs"] == 160
    assert st["online"]["trainings"] >= 1 and st["accepted"] > 0
    outcomes = st["outcomes"]

    def rate(d):
        return d.get("pass", 0) / max(1, sum(d.values()))
    assert rate(outcomes["accepted"]) > rate(outcomes["unfiltered"]), outcomes
    with Store(str(collect), create=False) as store:
        assert store.apis() == ["torch.ops.aten.add"]
        recs = list(store.records("torch.ops.aten.add"))
    assert len(recs) == 160
    assert {r.input.args["input"].dtype for r in recs} <= {"float32", "float64"}


def test_the_hooks_expensive_calls_stay_bounded(up, tmp_path):
    """What made the hook look slow upstream was not its own work (profiled on
    MaxPool3D: 7 s of 187 s, the rest the op's kernel on the extra valid runs);
    this keeps its own work bounded: training geometric in the labelled runs,
    one model call per candidate and one per solver sample (its probes in a
    batch), upstream's generator only for candidates and probes, and the time
    accounted by phase and by outcome."""
    from acetest_ml.upstream.hook import train_scorer
    calls = {"train": 0, "score": 0, "batched": 0, "generate": 0}

    class Counting:
        def __init__(self, model):
            self.model, self.threshold = model, model.threshold

        def score_batch(self, inputs):
            calls["score"] += 1
            calls["batched"] += len(inputs) > 1
            return self.model.score_batch(inputs)

    def trainer(spec, inputs, labels, config):
        calls["train"] += 1
        return Counting(train_scorer(spec, inputs, labels, config))

    gen = up.APIManager.APIManager.generate_random_args

    def counted(manager, *a, **k):
        calls["generate"] += 1
        return gen(manager, *a, **k)

    opt = make_option(up, tmp_path, test_round=160)
    up.APIManager.APIManager.generate_random_args = counted
    h = hook.FilterHook(hook.FilterConfig(mode="online", warmup=40, seed=0, probes=4), trainer=trainer)
    h.install(up.APIManager.APIManager, up.Runner.Runner)
    try:
        random.seed(5)
        r = up.Runner.Runner(API, opt)
        for _ in range(4):
            r.run(up.APIManager.APIManager(API, load_args(up), opt), 40)
        r.terminate()
    finally:
        h.uninstall()
        up.APIManager.APIManager.generate_random_args = gen
    st = json.loads((Path(r.output_dir) / hook.STATS_FILE).read_text())
    assert st["runs"] == r.total_times == 160
    # retrained at 40, 80, 160 labelled runs at most: never per run
    assert calls["train"] == st["online"]["trainings"] and 1 <= calls["train"] <= 3, calls
    probed = st["samples_scored"]
    assert probed >= 1 and calls["batched"] <= probed
    assert calls["score"] <= (st["scored"] - 4 * probed) + probed, (calls, st)
    assert calls["generate"] <= st["generated"] + 4 * probed, (calls, st)
    assert st["generated"] <= 160 * 3, st  # candidates per run stay a few, not max_tries
    phases = st["hook_time_s"]
    assert set(phases) == set(hook.PHASES) and phases["train"] > 0 and phases["score"] > 0
    assert st["run_time_s"].get("pass", 0) > 0 and st["run_time_s"].get("invalid", 0) > 0


def test_inputs_like_a_timeout_seen_k_times_stop_running(up, tmp_path):
    """Upstream waits round_timeout seconds on each timeout and restarts its
    worker: a learner that keeps a timeout class (never discarded) drew
    MaxPool3D's 128^3 windows again and again. Once k timeouts were seen,
    candidates predicted to reproduce one are drawn again (campaign rule)."""
    from acetest_ml.classify import train_model
    spec = convert.spec_from_upstream(API, load_args(up), "tf")
    random.seed(21)
    inputs = draw(up, up.APIManager.APIManager(API, load_args(up), None), 400, spec)
    labels = [2 if ai.args["value"].rank == 4 else int(bias_add_valid(ai)) for ai in inputs]
    model = train_model(spec, inputs, labels, "lightgbm", {"num_threads": 1}, 0.5)
    assert model.has_crash_class

    def campaign(k):
        (tmp_path / f"k{k}").mkdir()
        opt = make_option(up, tmp_path / f"k{k}")
        h = hook.FilterHook(hook.FilterConfig(mode="models", exploration=0.0, known_crash_k=k, seed=0),
                            scorer_factory=lambda m, a, s: model)
        h.install(up.APIManager.APIManager, up.Runner.Runner)
        hangs = 0
        try:
            random.seed(22)
            r = up.Runner.Runner(API, opt)
            manager = up.APIManager.APIManager(API, load_args(up), opt)
            manager._acetest_ml_runner = r
            for _ in range(60):
                manager.generate_random_args()
                if convert.to_abstract_input(API, manager.arg_list, "tf", spec).args["value"].rank == 4:
                    r.timeout += 1  # what upstream's runner counts when the worker hangs
                    hangs += 1
            manager.generate_random_args()  # settles the last run
        finally:
            h.uninstall()
        return hangs, h.stats()[API]

    hangs, st = campaign(3)
    assert hangs == 3, st  # the first three run (a predicted timeout is never discarded), then none
    assert st["known"] > 0 and st["outcomes"]["accepted"]["timeout"] == 3
    off_hangs, off = campaign(0)
    assert off_hangs > 10 and off["known"] == 0, off


def test_inputs_beyond_int64_are_drawn_again(up):
    """Upstream's huge-value mutation (2**64 - 1) makes TF fail before the op
    runs; the features cannot see it, so the hook draws such inputs again."""
    assert hook.beyond_int64(AbstractInput("x", {"n": 2 ** 64 - 1}))
    assert hook.beyond_int64(AbstractInput("x", {"l": [1, [2, -2 ** 63 - 1]]}))
    assert hook.beyond_int64(AbstractInput("x", {"t": TensorDesc("int32", (2,), low=-2.0 ** 64, high=2.0 ** 64)}))
    assert not hook.beyond_int64(AbstractInput("x", {"t": TensorDesc("float32", (2,), low=-2.0 ** 64,
                                                                     high=2.0 ** 64), "n": 2 ** 63 - 1}))
    scorer = RecordingScorer(threshold=0.0)  # the model accepts everything
    h = hook.FilterHook(hook.FilterConfig(mode="models", exploration=0.0), scorer_factory=lambda m, a, s: scorer)
    h.install(up.APIManager.APIManager, up.Runner.Runner)
    try:
        random.seed(4)
        args = load_args(up) + [up.Argument.Argument("n", {"type": "int", "min": 0, "max": 2 ** 64})]
        manager = up.APIManager.APIManager(API, args, None)
        ran = []
        for _ in range(30):
            manager.generate_random_args()
            ran.append(next(a for a in manager.arg_list if a.name == "n").arg_value.value)
    finally:
        h.uninstall()
    st = h.stats()[API]
    assert all(0 <= n <= 2 ** 63 - 1 for n in ran) and st["runs"] == 30
    assert st["int64_rejected"] > 5 and st["accepted"] == 30, st


# ------------------------------------------------------------------ online learning inside upstream

def test_online_trains_once_both_classes_have_min_per_class_runs(up):
    """The hook's trainer used to need 10 runs of each class (train_model's
    default), so an API that passes rarely (AvgPoolGrad: 11%) trained once in
    150 rounds; min_per_class sets it."""
    from acetest_ml.classify import TooFewExamples
    from acetest_ml.upstream.hook import train_scorer
    spec = convert.spec_from_upstream(API, load_args(up), "tf")
    random.seed(31)
    inputs = draw(up, up.APIManager.APIManager(API, load_args(up), None), 200, spec)
    valid = [ai for ai in inputs if bias_add_valid(ai)][:4]
    invalid = [ai for ai in inputs if not bias_add_valid(ai)][:16]
    xs, ys = valid + invalid, [1] * len(valid) + [0] * len(invalid)
    model = train_scorer(spec, xs, ys, hook.FilterConfig(mode="online", min_per_class=3))
    assert model.counts["valid"] == 4 and 0.0 <= model.threshold <= 1.0
    with pytest.raises(TooFewExamples):
        train_scorer(spec, xs, ys, hook.FilterConfig(mode="online", min_per_class=5))


def test_online_retrains_every_few_labels_early_on(up, tmp_path):
    opt = make_option(up, tmp_path, test_round=90)
    h = hook.FilterHook(hook.FilterConfig(mode="online", warmup=10, seed=0, retrain_every=10,
                                          retrain_factor=1.1, rules=False))
    r, st = run_hooked(up, opt, h, 1, 3, 30)
    at = st["online"]["trained_at"]
    assert st["runs"] == 90 and at[0] <= 20, at
    assert len(at) >= 6 and all(b - a <= 11 for a, b in zip(at, at[1:])), at
    assert st["unfiltered"] <= 20
    assert st["online"]["min_per_class"] == 3 and st["online"]["retrain_every"] == 10


def test_precision_threshold_keeps_half_the_valid_side_and_drops_invalid_ones():
    import numpy as np
    from acetest_ml.classify.model import best_threshold, precise_threshold
    # scores of 10 valid (1) and 10 invalid (0) examples; balanced accuracy
    # prefers a low cut that lets 3 invalid ones through
    p = np.array([.95, .9, .85, .8, .75, .5, .45, .42, .41, .4,
                  .7, .48, .47, .2, .15, .1, .1, .05, .05, .01])
    y = np.array([1] * 10 + [0] * 10)
    ba = best_threshold(y, p)
    pr = precise_threshold(y, p, 0.5)
    assert ba < 0.4 and ((p >= ba) & (y == 0)).sum() == 3
    assert 0.7 < pr < 0.75  # the top 5 valid ones, no invalid one
    assert ((p >= pr) & (y == 1)).sum() == 5 and ((p >= pr) & (y == 0)).sum() == 0
    # when no cut reaches the recall asked for without an invalid example, the
    # most precise one that does is taken
    assert ((p >= precise_threshold(y, p, 0.6)) & (y == 1)).sum() >= 6
    assert precise_threshold(np.array([1, 1]), np.array([.3, .9])) == 0.5


def test_learned_rules_reject_candidates_upstream_would_refuse(up, tmp_path):
    """With ``rules`` the hook learns from upstream's invalid.log messages
    (BiasAdd: "must be at least 2D", "Must provide as many biases as the last
    dimension") and draws again any candidate that breaks an active rule, even
    before a classifier exists (here: never, the trainer declines)."""
    from acetest_ml.classify import TooFewExamples

    def never(spec, inputs, labels, config):
        raise TooFewExamples(API, 0, 0, 1)

    def campaign(rules, repair=False):
        base = tmp_path / f"rules{int(rules)}{int(repair)}"
        base.mkdir()
        opt = make_option(up, base, test_round=150)
        h = hook.FilterHook(hook.FilterConfig(mode="online", warmup=10, seed=0, rules=rules, reallocate=False,
                                              exploration=0.0, repair=repair), trainer=never)
        return run_hooked(up, opt, h, 3, 3, 50)

    r, st = campaign(True)
    plain_r, plain = campaign(False)
    assert r.total_times == plain_r.total_times == 150
    active = st["rules"]["active"]
    assert active and st["rule_rejected"] > 0 and st["repaired"] == 0, st["rules"]
    assert "rules" not in plain and plain["rule_rejected"] == 0
    assert r.invalid < 0.6 * plain_r.invalid, (r.invalid, plain_r.invalid, active)

    # repair: a rule breaker is edited to meet the rules instead of drawn
    # again. The rule learned here gives the bias the last dim, wrong for
    # NCHW: its repairs fail far more often than inputs that met the rules
    # as drawn, so repair stops for that rule set and the rules filter again
    fixed_r, fixed = campaign(True, repair=True)
    assert fixed_r.total_times == 150
    rep = fixed["repair"]
    assert fixed["repaired"] >= hook.REPAIR_PROBATION and rep["times_off"] >= 1, rep
    assert fixed["rule_rejected"] > 0 and fixed_r.invalid < 0.6 * plain_r.invalid, (fixed_r.invalid, rep)


def test_a_refused_dtype_the_features_cannot_see_is_drawn_again(up, tmp_path):
    """Quantized dtypes convert to the int type of their width (the features
    see tf.qint8 as int8); once one was refused LOSSY_K times and never got
    past validation, candidates drawn with it are drawn again (BiasAddGrad:
    17 of 73 invalid runs were "Could not find device ... T=DT_QINT8/QINT32/QUINT8")."""
    scorer = RecordingScorer(threshold=0.0)  # the model accepts everything

    def campaign(mode):
        (tmp_path / mode).mkdir()
        opt = make_option(up, tmp_path / mode)
        h = hook.FilterHook(hook.FilterConfig(mode=mode, exploration=0.0, reallocate=False),
                            scorer_factory=lambda m, a, s: scorer)
        h.install(up.APIManager.APIManager, up.Runner.Runner)
        ran = []
        try:
            random.seed(6)
            args = load_args(up)
            next(a for a in args if a.name == "T").arg_prop.enum = ["float", "qint8", "int32"]
            r = up.Runner.Runner(API, opt)
            manager = up.APIManager.APIManager(API, args, opt)
            manager._acetest_ml_runner = r
            for _ in range(60):
                manager.generate_random_args()
                ai = convert.to_abstract_input(API, manager.arg_list, "tf")
                ran.append(ai.args["T"].name if not ai.origin.get("lossy_dtypes") else "qint8")
                if ran[-1] == "qint8":
                    r.invalid += 1  # no kernel for it: upstream counts it invalid
            manager.generate_random_args()  # settles the last run
        finally:
            h.uninstall()
        return ran, h.stats()[API]

    ran, st = campaign("models")
    assert ran.count("qint8") == hook.LOSSY_K, ran
    assert ran.count("int32") > 10 and st["lossy_rejected"] > 5, st
    plain, plain_st = campaign("none")  # no filter: nothing is refused
    assert plain.count("qint8") > 10 and plain_st["lossy_rejected"] == 0


def test_a_failing_rule_learner_never_stops_upstream(up, tmp_path, monkeypatch):
    """A bug in rule learning (here: observe raises) is reported once and the
    hook goes on without rules; upstream still runs every round."""
    from acetest_ml.learn import RuleLearner

    def broken(self, *a, **k):
        raise RuntimeError("boom")

    monkeypatch.setattr(RuleLearner, "observe", broken)
    opt = make_option(up, tmp_path, test_round=40)
    h = hook.FilterHook(hook.FilterConfig(mode="online", warmup=10, seed=0, rules=True))
    h.install(up.APIManager.APIManager, up.Runner.Runner)
    try:
        random.seed(3)
        r = up.Runner.Runner(API, opt)
        r.run(up.APIManager.APIManager(API, load_args(up), opt), 40)
        r.terminate()
    finally:
        h.uninstall()
    st = json.loads((Path(r.output_dir) / hook.STATS_FILE).read_text())
    assert r.total_times == st["runs"] == 40
    assert "boom" in st["rules_failed"] and "rules" not in st and st["rule_rejected"] == 0


def test_attributes_refused_beyond_int32_are_drawn_again(up, tmp_path):
    """Upstream's huge-value mutation reaches list attributes, which TF reads
    as int32 ("Attr strides has value ... out of range for an int32": 22 of
    Conv2D's 196 invalid runs at seed 4). Once the op said so, candidates with
    such a value in that attribute are drawn again."""
    flt = hook.FilterHook(hook.FilterConfig(mode="online")).filter_for("tf.raw_ops.Conv2D", "tf")
    huge = AbstractInput("tf.raw_ops.Conv2D", {"strides": [1, 2 ** 40, 1, 1], "dilations": [1, 2 ** 40, 1, 1]})
    assert not flt.out_of_int32(huge) and not flt._filtering()
    flt.note_message("{{function_node __wrapped__Conv2D_device_/job:localhost/replica:0/task:0/device:CPU:0}} "
                     "Attr strides has value 3838130825486059252 out of range for an int32 [Op:Conv2D] name:")
    assert flt.int32_attrs == {"strides"} and flt._filtering()
    assert flt.out_of_int32(huge)
    assert not flt.out_of_int32(AbstractInput("tf.raw_ops.Conv2D", {"strides": [1, 2, 2, 1],
                                                                      "dilations": [1, 2 ** 40, 1, 1]}))
    # in the regenerate loop: the stand-in's BiasAdd has no list attribute, so
    # an int argument stands for one
    scorer = RecordingScorer(threshold=0.0)
    h = hook.FilterHook(hook.FilterConfig(mode="models", exploration=0.0), scorer_factory=lambda m, a, s: scorer)
    h.install(up.APIManager.APIManager, up.Runner.Runner)
    try:
        h.filter_for(API, "tf").note_message("Attr n has value -5977478217464098552 out of range for an int32")
        random.seed(4)
        args = load_args(up) + [up.Argument.Argument("n", {"type": "int", "min": 0, "max": 2 ** 33})]
        manager = up.APIManager.APIManager(API, args, None)
        ran = []
        for _ in range(30):
            manager.generate_random_args()
            ran.append(next(a for a in manager.arg_list if a.name == "n").arg_value.value)
    finally:
        h.uninstall()
    st = h.stats()[API]
    assert all(n <= 2 ** 31 - 1 for n in ran) and st["int32_rejected"] > 10, st


@pytest.mark.parametrize("early", [True, False])
def test_a_message_rule_before_any_run_passed(up, tmp_path, early):
    """``early_rules``: the op's own message is enough to adopt its rule before
    any run passed (AvgPoolGrad passed 18 of 150 runs, the first late); without
    it the run waits and is replayed after the first pass."""
    import types
    flt = hook.FilterHook(hook.FilterConfig(mode="online", early_rules=early)).filter_for(API, "tf")
    flt.spec = convert.spec_from_upstream(API, load_args(up), "tf")
    out = tmp_path / "out"
    out.mkdir()
    flt.messages.mark(str(out))
    (out / "invalid.log").write_text("cpu_ori\nMust provide as many biases as the last dimension of the input "
                                     "tensor: [3] vs. [2,4] [Op:BiasAdd]\n")
    ai = AbstractInput(API, {"T": DTypeValue("float32"), "data_format": "NHWC",
                             "value": TensorDesc("float32", (2, 4)), "bias": TensorDesc("float32", (3,))})
    flt._learn_rules(types.SimpleNamespace(output_dir=str(out)), hook._Pending(ai, "accepted"), "invalid")
    if early:
        assert flt.active_rules() and flt.breaks_rule(ai) and not flt.rule_backlog
        good = AbstractInput(API, {**ai.args, "bias": TensorDesc("float32", (4,))})
        assert not flt.breaks_rule(good)
    else:
        assert not flt.active_rules() and len(flt.rule_backlog) == 1


class StaleScorer(RankScorer):
    """Accepts every solver sample when it is probed (a batch of fills), then
    scores single candidates by rank: a model retrained after the sample was
    accepted, that now rejects all its fills."""

    def score_batch(self, inputs):
        import numpy as np
        if len(inputs) > 1:
            return np.full(len(inputs), 0.9)
        return super().score_batch(inputs)


def test_a_sample_whose_runs_are_forced_gives_its_rounds_away(up, tmp_path):
    import numpy as np

    def campaign(chunk):
        base = tmp_path / f"chunk{chunk}"
        base.mkdir()
        opt = make_option(up, base, test_round=80)
        h = hook.FilterHook(hook.FilterConfig(mode="models", exploration=0.0, max_tries=5, seed=0, probes=3,
                                              chunk=chunk, give_up_forced=2),
                            scorer_factory=lambda m, a, s: StaleScorer())
        h.install(up.APIManager.APIManager, up.Runner.Runner)
        per_sample = []
        try:
            random.seed(2)
            np.random.seed(2)
            r = up.Runner.Runner(API, opt)
            for args in (rank_one_sample(up), load_args(up)):  # hopeless first, then a good one
                before = r.total_times
                r.run(up.APIManager.APIManager(API, args, opt), 40)
                per_sample.append(r.total_times - before)
            r.terminate()
        finally:
            h.uninstall()
        return r, per_sample, h.stats()[API]

    r, per_sample, st = campaign(10)
    assert r.total_times == 80 and per_sample == [10, 70], per_sample
    assert st["samples_abandoned"] == 1 and st["rounds_moved"] == 30
    assert st["forced"] >= 10
    plain_r, plain, plain_st = campaign(0)
    assert plain == [40, 40] and plain_st["samples_abandoned"] == 0
    assert plain_st["forced"] >= 40 and r.invalid < plain_r.invalid - 20, (r.invalid, plain_r.invalid)


def test_the_rounds_of_a_lone_hopeless_sample_are_kept(up, tmp_path):
    """With one solver sample, given up on after its forced runs, there is no
    other sample to take its rounds: they run on it at the end, so upstream's
    round count still holds (seen on Conv2DBackpropInput: 10 of 300 rounds)."""
    import numpy as np
    opt = make_option(up, tmp_path, test_round=40)
    h = hook.FilterHook(hook.FilterConfig(mode="models", exploration=0.0, max_tries=5, seed=0, probes=3,
                                          chunk=10, give_up_forced=2),
                        scorer_factory=lambda m, a, s: StaleScorer())
    h.install(up.APIManager.APIManager, up.Runner.Runner)
    try:
        random.seed(2)
        np.random.seed(2)
        r = up.Runner.Runner(API, opt)
        r.run(up.APIManager.APIManager(API, rank_one_sample(up), opt), 40)
        after_sample = r.total_times
        r.terminate()
    finally:
        h.uninstall()
    st = h.stats()[API]
    assert after_sample == 10 and st["samples_abandoned"] == 1
    assert r.total_times == 40 and st["rounds_spent_at_end"] == 30


# ------------------------------------------------------------------ repair

def test_write_back_edits_copies_of_upstreams_values(up):
    """``convert.write_back`` sets upstream's value objects so that they
    convert to an edited input: shapes (and rank), dtypes, ints, flags, list
    items and length, small integer elements (written out explicitly); the
    drawn objects are left as they were (the hook keeps references to them)
    and an edit upstream's values cannot hold changes nothing."""
    V = up.ArgumentValue
    value = V.TensorValue("value", "tf.float32", [2, 3])
    perm = V.TensorValue("perm", "tf.int32", [3])
    ksize = V.ListValue("ksize", [V.IntValue(None, 1), V.IntValue(None, 2)])
    args = [_arg(up, "T", "type", V.TypeValue("T", "tf.float32"), is_mid=True),
            _arg(up, "value", "tensor", value), _arg(up, "perm", "tensor", perm),
            _arg(up, "axis", "int", V.IntValue("axis", -1)), _arg(up, "flag", "bool", V.BoolValue("flag", True)),
            _arg(up, "ksize", "list", ksize)]
    old = convert.to_abstract_input(API, args, "tf")
    new_args = dict(old.args)
    new_args.update(T=DTypeValue("float64"), value=TensorDesc("float64", (2, 3, 4), low=-1024.0, high=1024.0),
                    perm=TensorDesc("int32", (3,), values=(2, 0, 1), low=-1024.0, high=1024.0),
                    axis=2, flag=False, ksize=[1, 2, 1, 5])
    new = AbstractInput(API, new_args)
    assert convert.write_back(args, old, new, "tf")
    back = convert.to_abstract_input(API, args, "tf")
    assert back.args == {**new.args, "perm": TensorDesc("int32", (3,), values=(2, 0, 1))}
    assert [i.value for i in args[5].arg_value.value] == [1, 2, 1, 5]
    # the drawn objects themselves are unchanged
    assert value.shape == [2, 3] and value.dtype == "tf.float32" and perm.value is None
    assert [i.value for i in ksize.value] == [1, 2]
    # a float tensor's elements cannot be written: nothing changes
    before = [a.arg_value for a in args]
    floats = AbstractInput(API, {**back.args, "value": TensorDesc("float64", (1,), values=(0.5,))})
    assert not convert.write_back(args, back, floats, "tf")
    assert [a.arg_value for a in args] == before
    # an argument the edit drops cannot be expressed either
    dropped = AbstractInput(API, {k: v for k, v in back.args.items() if k != "axis"})
    assert not convert.write_back(args, back, dropped, "tf")


def test_repair_meets_correct_rules_with_fewer_draws(up, tmp_path):
    """With rules that are right (BiasAdd's, written by hand), repairing a
    rule breaker instead of drawing it again runs about as validly on the
    stand-in's real TensorFlow op and draws far fewer candidates."""
    from acetest_ml.classify import TooFewExamples

    def never(spec, inputs, labels, config):
        raise TooFewExamples(API, 0, 0, 1)

    rules = ["value.rank >= 2", "bias.rank == 1",
             "data_format != 'NCHW' or bias.dim[0] == value.dim[1]",
             "data_format == 'NCHW' or bias.dim[0] == value.dim[-1]"]

    def campaign(repair):
        base = tmp_path / f"repair{int(repair)}"
        base.mkdir()
        opt = make_option(up, base, test_round=90)
        h = hook.FilterHook(hook.FilterConfig(mode="online", warmup=10, seed=0, rules=False, reallocate=False,
                                              exploration=0.0, repair=repair), trainer=never)
        flt = h.filter_for(API, "tf")
        flt.active_rules = lambda: list(rules)  # type: ignore[method-assign]
        return run_hooked(up, opt, h, 3, 3, 30)

    fixed_r, fixed = campaign(True)
    drawn_r, drawn = campaign(False)
    assert fixed_r.total_times == drawn_r.total_times == 90
    assert fixed["repaired"] > 20 and fixed["repair"]["off"] is None, fixed["repair"]
    assert drawn["repaired"] == 0 and drawn["rule_rejected"] > 0
    assert fixed["generated"] < 0.6 * drawn["generated"], (fixed["generated"], drawn["generated"])
    assert fixed_r.invalid <= drawn_r.invalid + 2, (fixed_r.invalid, drawn_r.invalid)


def test_elements_a_rule_reads_are_drawn_by_the_hook(up):
    """Upstream draws a tensor's elements inside its worker, so a rule on
    them (Transpose's perm) cannot be checked on its candidate: the hook
    draws them itself, repairs them to meet the rule and passes them
    explicitly; the drawn value object is untouched."""
    V = up.ArgumentValue
    flt = hook.FilterHook(hook.FilterConfig(mode="online")).filter_for("tf.raw_ops.Transpose", "tf")
    perm = V.TensorValue("perm", "tf.int32", [3])
    args = [_arg(up, "x", "tensor", V.TensorValue("x", "tf.float32", [2, 3, 4])),
            _arg(up, "perm", "tensor", perm)]
    flt.spec = convert.spec_from_upstream("tf.raw_ops.Transpose", args, "tf")
    rule = ("perm.rank == 1 and perm.dim[0] == x.rank and 0 <= perm[0] and perm[0] < x.rank and 0 <= perm[1] "
            "and perm[1] < x.rank and 0 <= perm[2] and perm[2] < x.rank and perm[0] != perm[1] "
            "and perm[0] != perm[2] and perm[1] != perm[2]")
    flt.active_rules = lambda: [rule]  # type: ignore[method-assign]
    ai = convert.to_abstract_input("tf.raw_ops.Transpose", args, "tf", flt.spec)
    assert flt.hidden_elements(ai) == ["perm"]
    seen = set()
    for _ in range(20):
        args[1].arg_value = perm
        fixed = flt.repaired(args, ai, pin=flt.hidden_elements(ai))
        assert fixed is not None and fixed.origin["repaired"]
        written = args[1].arg_value.value
        assert sorted(written) == [0, 1, 2], written
        assert fixed.args["perm"].values == tuple(written)
        seen.add(tuple(written))
    assert perm.value is None and len(seen) > 1  # fresh draws, not one fixed permutation
    import tensorflow as tf
    out = tf.raw_ops.Transpose(x=tf.zeros([2, 3, 4]), perm=list(written))
    assert sorted(out.shape.as_list()) == [2, 3, 4]


def test_small_int32_tensors_are_drawn_by_the_hook(up):
    """Online with repair, the hook draws the elements of every small int32
    tensor upstream would fill in its worker (in its range) and passes them
    explicitly, so the run's values are known; other tensors, and the hook
    without repair, leave upstream's values alone."""
    V = up.ArgumentValue

    def args():
        return [_arg(up, "size", "tensor", V.TensorValue("size", "tf.int32", [2], min_val=-5, max_val=5)),
                _arg(up, "big", "tensor", V.TensorValue("big", "tf.int32", [40])),
                _arg(up, "wide", "tensor", V.TensorValue("wide", "tf.int64", [2])),
                _arg(up, "x", "tensor", V.TensorValue("x", "tf.float32", [2, 2]))]

    for repair in (True, False):
        flt = hook.FilterHook(hook.FilterConfig(mode="online", repair=repair)).filter_for(
            "tf.raw_ops.ResizeBilinear", "tf")
        arg_list = args()
        flt.spec = convert.spec_from_upstream("tf.raw_ops.ResizeBilinear", arg_list, "tf")
        drawn = arg_list[0].arg_value
        ai = flt.pinned(arg_list, convert.to_abstract_input("tf.raw_ops.ResizeBilinear", arg_list, "tf", flt.spec))
        if repair:
            vals = arg_list[0].arg_value.value
            assert len(vals) == 2 and all(-5 <= v <= 5 for v in vals), vals
            assert ai.args["size"].values == tuple(vals) and drawn.value is None
        else:
            assert arg_list[0].arg_value is drawn and ai.args["size"].values is None
        assert all(a.arg_value.value is None for a in arg_list[1:])
