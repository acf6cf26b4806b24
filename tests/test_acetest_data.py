"""ACETest's own data read with ACETest's semantics (real data, real Z3)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import z3

from acetest_ml.errors import UnknownApiError, UserError
from acetest_ml.model import DTYPE, INT_LIST, STR, TENSOR, AbstractInput, DTypeValue, TensorDesc
from acetest_ml.solve.acetest import clean_smt2, read_constraint_file
from acetest_ml.solve.sampler import Sampler
from acetest_ml.spec.acetest_data import AcetestData

from helpers import ACETEST_DATA

DATA = Path(ACETEST_DATA)
if not (DATA / "tensorflow" / "API2OP.csv").is_file():
    pytest.skip(f"ACETest data not found at {DATA}", allow_module_level=True)

MANIFEST = json.loads((DATA / "MANIFEST.json").read_text())


@pytest.fixture(scope="module")
def data() -> AcetestData:
    return AcetestData(str(DATA))


@pytest.fixture(scope="module")
def loaded(data):
    """Every API of the manifest, loaded once (the slow part: z3 checks each set).
    With --acetest-extensions: these tests pin our generation beyond upstream
    (every input inside its formulas); the faithful default is
    tests/test_acetest_fidelity.py."""
    out = {}
    for api in MANIFEST["apis"]:
        try:
            out[api] = data.load(api, extensions=True)
        except UnknownApiError as e:   # only acceptable with a clear reason
            out[api] = e
    return out


def _problem_of(api, ai):
    return next(p for p in api.problems if p.set_id == ai.origin["set"])


def test_every_manifest_api_loads(loaded):
    assert len(loaded) == len(MANIFEST["apis"])
    for name, api in loaded.items():
        entry = MANIFEST["apis"][name]
        if isinstance(api, UnknownApiError):
            # only an API the data does not have (no API2OP row), when TF's reader is absent
            assert entry["op_name"] is None and name in str(api)
            continue
        assert api.spec.name == name and api.spec.args, name
        assert len(api.problems) >= 1, name
        for f, reason in api.skipped:
            assert isinstance(f, str) and reason, name
        if entry["op_json"]:
            assert api.spec.source == "acetest", name
        # a satisfiable constraint set exists whenever some combination was kept
        constrained = [p for p in api.problems if p.constrained]
        if entry["constraint_files"] and not constrained:
            assert (any("unsatisfiable" in r or "parse" in r for _, r in api.skipped)
                    or any("no assertion involves an argument" in n for n in api.notes)), name


def test_apis_listing_comes_from_api2op(data):
    apis = data.apis()
    assert "tf.raw_ops.Conv2D" in apis and "tf.raw_ops.BiasAddGrad" in apis
    # MirrorPad: constraints folder only; Conv2DBackpropInput: op_json only
    assert "tf.raw_ops.MirrorPad" in apis and "tf.raw_ops.Conv2DBackpropInput" in apis
    # in API2OP.csv but neither op_json nor constraints here
    assert "tf.raw_ops.Abs" not in apis
    assert apis == sorted(apis)


def test_conv2d_spec_from_op_json(loaded):
    spec = loaded["tf.raw_ops.Conv2D"].spec
    names = [a.name for a in spec.args]
    assert names[:2] == ["input", "filter"]          # inputs first, in input_order
    assert spec.arg("input").kind == TENSOR and spec.arg("input").dtype_ref == "T"
    t = spec.arg("T")
    assert t.kind == DTYPE and not t.passed and t.allowed == ["float16", "bfloat16", "float32",
                                                              "float64", "int32"]
    assert spec.arg("strides").kind == INT_LIST
    pad = spec.arg("padding")
    assert pad.kind == STR and pad.allowed == ["SAME", "VALID", "EXPLICIT"]
    assert spec.arg("dilations").has_default and spec.arg("dilations").default == [1, 1, 1, 1]


_SAMPLE_SCRIPT = """
import sys
from acetest_ml.spec.acetest_data import AcetestData
from acetest_ml.solve.sampler import Sampler
api = AcetestData(sys.argv[1]).load(sys.argv[2], extensions=True)
for ai in Sampler(api.problems, seed=int(sys.argv[3])).take(int(sys.argv[4])):
    print(ai.dumps())
"""


def _sample_in_fresh_process(api: str, seed: int, n: int) -> list[str]:
    # Z3's choices depend on the term history of its context, so a seeded run is
    # repeatable from a fresh process (as a campaign or a rerun starts)
    env = dict(os.environ, OMP_NUM_THREADS="1", TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run([sys.executable, "-c", _SAMPLE_SCRIPT, str(DATA), api, str(seed), str(n)],
                         capture_output=True, text=True, env=env, timeout=300,
                         cwd=str(Path(__file__).resolve().parents[1]))
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.splitlines()


def test_biasadd_bias_rank_is_one_and_sampling_is_deterministic(loaded):
    api = loaded["tf.raw_ops.BiasAdd"]
    assert all(p.constrained for p in api.problems)
    a = _sample_in_fresh_process("tf.raw_ops.BiasAdd", 11, 50)
    b = _sample_in_fresh_process("tf.raw_ops.BiasAdd", 11, 50)
    assert len(a) == 50 and a == b
    c = [x.dumps() for x in Sampler(api.problems, seed=12).take(50)]
    assert c != a
    inputs = [AbstractInput.loads(s) for s in a]
    for ai in inputs:
        bias, value = ai.args["bias"], ai.args["value"]
        assert isinstance(bias, TensorDesc) and bias.rank == 1
        assert bias.dtype == value.dtype == ai.args["T"].name   # &T.value resolved
        assert "bias.rank" in ai.solved and ai.origin["set"].startswith("compute_")
        assert _problem_of(api, ai).check_input(ai)
    assert len({ai.key() for ai in inputs}) >= 40            # models are spread out


def test_conv2d_constraints_bind_the_right_arguments(loaded):
    api = loaded["tf.raw_ops.Conv2D"]
    prob = next(p for p in api.problems if p.constrained)
    # the formulas themselves force these (proved with z3, not assumed)
    for arg, part, value in (("input", "rank", 4), ("filter", "rank", 4), ("strides", "len", 4)):
        s = z3.Solver(ctx=prob.ctx)
        s.add(prob.formulas())
        s.add(prob.scalars[(arg, part)] != value)
        assert s.check() == z3.unsat, (arg, part)
    for ai in Sampler([prob], seed=3, timeout_ms=30000).take(6):  # generous: a loaded machine
        assert ai.args["input"].rank == 4 and ai.args["filter"].rank == 4
        assert len(ai.args["strides"]) == 4
        assert {"input.rank", "filter.rank", "strides.length"} <= set(ai.solved)
        assert ai.args["padding"] in ("SAME", "VALID", "EXPLICIT")
        assert prob.check_input(ai)


def test_check_input_rejects_a_broken_input(loaded):
    api = loaded["tf.raw_ops.BiasAdd"]
    ai = Sampler(api.problems, seed=5).next()
    prob = _problem_of(api, ai)
    assert prob.check_input(ai)
    bad = AbstractInput.loads(ai.dumps())
    b = bad.args["bias"]
    bad.args["bias"] = TensorDesc(b.dtype, b.shape + (3,))   # rank 2: the kernel rejects it
    assert not prob.check_input(bad)


def test_fifty_samples_satisfy_their_sets(loaded):
    # a set with lists, strings and several tensors
    api = loaded["tf.raw_ops.MaxPool3D"]
    xs = Sampler(api.problems, seed=21).take(50)
    assert len({x.key() for x in xs}) >= 25
    for ai in xs:
        assert _problem_of(api, ai).check_input(ai), ai.dumps()
        assert ai.args["data_format"] in ("NDHWC", "NCDHW")
        assert ai.args["input"].dtype == ai.args["T"].name


def test_op_json_without_constraints(loaded):
    api = loaded["tf.raw_ops.Conv2DBackpropInput"]
    assert [p.set_id for p in api.problems] == ["op_json"]
    assert not api.problems[0].constrained and api.problems[0].formulas() == []
    xs = Sampler(api.problems, seed=1).take(20)
    for ai in xs:
        assert list(ai.args) == [a.name for a in api.spec.args]
        assert ai.solved == []
        assert isinstance(ai.args["filter"], TensorDesc) and 0 <= ai.args["filter"].rank <= 6
        assert ai.args["filter"].dtype == ai.args["out_backprop"].dtype == ai.args["T"].name
        assert ai.args["input_sizes"].dtype == "int32"
        assert ai.args["padding"] in ("SAME", "VALID", "EXPLICIT")
    assert len({ai.key() for ai in xs}) == 20


def test_constraints_without_op_json_use_the_tf_registry(loaded):
    pytest.importorskip("acetest_ml.spec.tensorflow")
    api = loaded["tf.raw_ops.MirrorPad"]
    assert any("registry" in n for n in api.notes)
    assert api.spec.has_arg("input") and api.spec.has_arg("paddings") and api.spec.has_arg("mode")
    prob = next(p for p in api.problems if p.constrained)
    for ai in Sampler(api.problems, seed=4).take(10):
        assert set(ai.args) == {a.name for a in api.spec.args}
        assert ai.args["mode"] in api.spec.arg("mode").allowed
        assert prob.check_input(ai)
    # Cumsum's axis is a tensor in TF; the formulas use it as a value: upstream's rewrite
    cum = loaded["tf.raw_ops.Cumsum"]
    assert cum.spec.arg("axis").kind == "int"
    ai = Sampler(cum.problems, seed=2).next()
    assert isinstance(ai.args["axis"], int) and "axis" in ai.solved


def test_unknown_api_and_missing_data(tmp_path, data):
    with pytest.raises(UnknownApiError):
        data.load("tf.raw_ops.NoSuchOperatorAtAll")
    with pytest.raises(UserError, match=str(tmp_path / "nowhere")):
        AcetestData(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="API2OP.csv"):
        AcetestData(str(tmp_path / "empty"))


def test_corrupt_file_is_skipped_with_a_reason(tmp_path):
    src = DATA / "tensorflow"
    root = tmp_path / "data" / "tensorflow"
    (root / "op_json").mkdir(parents=True)
    (root / "constraints").mkdir()
    lines = (src / "API2OP.csv").read_text().splitlines()
    (root / "API2OP.csv").write_text("\n".join([lines[0]] + [l for l in lines
                                                             if l.startswith("tf.raw_ops.BiasAdd ")]) + "\n")
    shutil.copy(src / "op_json" / "BiasAdd.json", root / "op_json" / "BiasAdd.json")
    shutil.copytree(src / "constraints" / "BiasOp", root / "constraints" / "BiasOp")
    (root / "constraints" / "BiasOp" / "compute_7.z3").write_text(
        "(declare-fun ARGNAME_bias_NAMEEND_DIM () (_ BitVec 64))\n(assert (= ARGNAME_bias_NAMEEND_DIM\n")
    (root / "constraints" / "BiasOp" / "compute_8.z3").write_text(
        "(declare-fun x () (_ BitVec 64))\n(assert (bvfoo x x))\n")
    d = AcetestData(str(tmp_path / "data"))      # the folder holding tensorflow/
    assert d.apis() == ["tf.raw_ops.BiasAdd"]
    api = d.load("BiasAdd", extensions=True)
    reasons = dict(api.skipped)
    assert "unbalanced" in reasons["constraints/BiasOp/compute_7.z3"]
    assert "parse" in reasons["constraints/BiasOp/compute_8.z3"]
    assert [p.set_id for p in api.problems] == ["compute_0+constructor_0", "compute_1+constructor_0",
                                               "compute_2+constructor_0"]
    assert AcetestData(str(root)).apis() == ["tf.raw_ops.BiasAdd"]   # the tensorflow/ folder too


def test_clean_smt2_drops_multiline_model_forms(tmp_path):
    text = ("(declare-fun ARGNAME_a_NAMEEND_DIM () (_ BitVec 64))\n"
            "(assert (bvsge ARGNAME_a_NAMEEND_DIM #x0000000000000002))\n"
            "(model-add ARGNAME_a_NAMEEND_DIM\n   ()\n   (_ BitVec 64)\n   (ite k!0 #x01 #x02))\n"
            "(model-del k!0)\n")
    cleaned = clean_smt2(text)
    assert "model-" not in cleaned and "declare-fun" in cleaned and "assert" in cleaned
    p = tmp_path / "compute_3.z3"
    p.write_text(text)
    f = read_constraint_file(str(p))
    assert f.kind == "compute" and f.name == "compute_3" and len(f.assertions) == 1


def test_dtype_and_default_bounds_semantics(loaded):
    # quantized dtypes of the op_json are dropped (the data model has none)
    t = loaded["tf.raw_ops.BiasAdd"].spec.arg("T")
    assert "qint8" not in t.allowed and "float32" in t.allowed
    # ranks of unconstrained tensors stay within upstream's 0..6, dims within 0..16
    api = loaded["tf.raw_ops.MatMul"]
    for ai in Sampler(api.problems, seed=9).take(30):
        for td in ai.tensors().values():
            assert 0 <= td.rank <= 6
            assert all(0 <= d <= 16 or d >= 2 ** 32 for d in td.shape)
        assert isinstance(ai.args["T"], DTypeValue)


def test_op_json_args_the_raw_op_does_not_accept_are_dropped_with_a_note(tmp_path):
    """ACETest's op_json sometimes lists an attribute TensorFlow infers (a
    ragged rank, a list length) as an argument; passing it makes every call
    fail with an unexpected-keyword TypeError. It is kept as not passed."""
    root = tmp_path / "tensorflow"
    (root / "op_json").mkdir(parents=True)
    (root / "API2OP.csv").write_text("api_name op_name file_path\ntf.raw_ops.Unpack UnpackOp x\n")
    props = json.loads((DATA / "tensorflow" / "op_json" / "Unpack.json").read_text())
    props["RAGGED_RANK"] = {"input_order": -1, "name": "RAGGED_RANK", "type": "int", "min": 0, "max": 3}
    (root / "op_json" / "Unpack.json").write_text(json.dumps(props))
    api = AcetestData(str(tmp_path)).load("tf.raw_ops.Unpack")
    arg = api.spec.arg("RAGGED_RANK")
    assert not arg.passed
    assert "RAGGED_RANK: not an argument of tf.raw_ops.Unpack (TensorFlow infers it); not passed" in api.notes
    assert api.spec.notes["dropped_args"] == ["RAGGED_RANK"]
    assert all(a.passed for a in api.spec.args if a.name in ("value", "num", "axis"))

    from acetest_ml.campaign import CampaignConfig, run_campaign
    summary = run_campaign(CampaignConfig(apis=["tf.raw_ops.Unpack"], out=str(tmp_path / "run"), budget=30,
                                          seed=0, constraints="acetest", acetest_data=str(tmp_path), jobs=1),
                           show_progress=False)
    s = summary["apis"]["tf.raw_ops.Unpack"]
    assert s["executed"] == 30
    assert not any("unexpected keyword" in m for m, _ in s["top_errors"]), s["top_errors"]


def test_acetest_mode_runs_tensorflow_without_onednn_like_upstreams_cpu_mode(tmp_path):
    """Upstream's cpu_ori mode sets TF_ENABLE_ONEDNN_OPTS=0 (oneDNN's kernels
    accept and reject other inputs); our ACETest mode does the same unless told."""
    from acetest_ml.campaign import CampaignConfig, _Executors

    def env_of(**kw):
        ex = _Executors(CampaignConfig(apis=["tf.raw_ops.Abs"], out=str(tmp_path), **kw))
        try:
            return ex("tf")._env().get("TF_ENABLE_ONEDNN_OPTS"), ex("torch")._env().get("TF_ENABLE_ONEDNN_OPTS")
        finally:
            ex.close()
    import os as _os
    default = _os.environ.get("TF_ENABLE_ONEDNN_OPTS")
    assert env_of(constraints="acetest") == ("0", default)
    assert env_of(constraints="acetest", onednn=True) == ("1", default)
    assert env_of(constraints="registry") == (default, default)
