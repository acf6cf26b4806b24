"""Prior rules (``--prior-rules``) and the repair of drawn inputs to meet
learned rules that cannot be compiled into the solver (ACETest constraints)."""
import json
import os
import random
import sqlite3

from acetest_ml.cli import main
from acetest_ml.learn.evaluate import holds
from acetest_ml.learn.learner import KEPT, REJECTED, RuleLearner
from acetest_ml.learn.repair import repair_all
from acetest_ml.learn.sampling import registry_check
from acetest_ml.model import AbstractInput, TensorDesc
from acetest_ml.spec import get_spec

from helpers import ACETEST_DATA, needs_acetest_data


def _pool(ksize, strides, shape=(2, 5, 5, 3), padding="VALID"):
    return AbstractInput("tf.raw_ops.AvgPool", {"value": TensorDesc("float32", shape, -1, 1),
                                                "ksize": list(ksize), "strides": list(strides),
                                                "padding": padding, "data_format": "NHWC"}, 1)


def test_repair_meets_lengths_items_ranks_and_relations():
    rules = ["len(ksize) == 4", "ksize[0] == 1 and ksize[-1] == 1", "value.rank == 4",
             "strides[1] > 0 and strides[2] > 0", "ksize[1] <= value.dim[1]",
             "value.dtype in ('float32', 'float64')"]
    rng = random.Random(0)
    ai = _pool([3, 2, 2, 3, 7], [1, -2, 0, 1], shape=(2, 5, 5, 3, 1))
    ai.args["value"] = TensorDesc("bfloat16", (2, 5), -1, 1)
    fixed = repair_all(rules, ai, rng)
    assert fixed is not None and all(holds(r, fixed) for r in rules), fixed
    assert fixed.args["ksize"][:1] == [1] and len(fixed.args["ksize"]) == 4
    assert fixed.args["value"].rank == 4 and fixed.args["value"].dtype in ("float32", "float64")
    assert ai.args["ksize"] == [3, 2, 2, 3, 7]  # the draw itself is left as it was
    # two dims made equal, and a conditioned rule repairs its substance, not the condition
    mm = AbstractInput("tf.raw_ops.MatMul", {"a": TensorDesc("float32", (3, 4)), "b": TensorDesc("float32", (6, 2)),
                                             "transpose_a": False, "transpose_b": False}, 1)
    cond = "transpose_a or (a.dim[-1] == b.dim[-2])"
    fixed = repair_all([cond], mm, rng)
    assert fixed is not None and fixed.args["transpose_a"] is False
    assert fixed.args["a"].shape[-1] == fixed.args["b"].shape[-2]
    # an input that already satisfies the rules comes back unchanged; an impossible one gives None
    ok = _pool([1, 2, 2, 1], [1, 1, 1, 1])
    assert repair_all(rules, ok, rng) is ok
    assert repair_all(["len(ksize) == 4 and len(ksize) == 5"], ok, rng) is None


def test_prior_rules_start_kept_and_are_still_checked():
    spec = get_spec("tf.raw_ops.BiasAdd")
    prior = ["value.rank >= 2", "value.rank == 3", "value.rank == 1 and value.rank == 2"]
    lr = RuleLearner(spec, registry_check(spec), prior=prior)
    status = {r.expr: r.status for r in lr.rules}
    # the unsatisfiable one is rejected at once, the others are active from run 0
    assert status == {"value.rank >= 2": KEPT, "value.rank == 3": KEPT,
                      "value.rank == 1 and value.rank == 2": REJECTED}
    assert lr.active() == ["value.rank >= 2", "value.rank == 3"]
    # a passing run that breaks a prior rule rejects it
    run = AbstractInput(spec.name, {"value": TensorDesc("float32", (2, 3)), "bias": TensorDesc("float32", (3,)),
                                    "data_format": "NHWC"}, 1)
    assert lr.observe(run, "pass", None)
    assert lr.active() == ["value.rank >= 2"]


@needs_acetest_data
def test_prior_rules_campaign_with_acetest_constraints(tmp_path):
    """ACETest constraint sets draw lists and dims at random: the prior rules
    are met from the first candidate on (drawn inputs are repaired), and the
    summary records them with source ``prior``."""
    rules = tmp_path / "prior.yaml"
    exprs = ["len(ksize) == 4", "len(strides) == 4", "ksize[0] == 1 and ksize[-1] == 1",
             "strides[0] == 1 and strides[-1] == 1", "data_format == 'NHWC'"]
    rules.write_text("rules:\n  tf.raw_ops.AvgPool:\n" + "".join(f"    - {json.dumps(e)}\n" for e in exprs))
    out = str(tmp_path / "ace")
    assert main(["campaign", "--api", "tf.raw_ops.AvgPool", "--constraints", "acetest",
                 "--acetest-data", ACETEST_DATA, "--budget", "12", "--seed", "3", "--out", out,
                 "--jobs", "1", "--no-progress", "--learn-rules", "--prior-rules", str(rules)]) == 0
    v = json.load(open(os.path.join(out, "summary.json")))["apis"]["tf.raw_ops.AvgPool"]
    prior = {r["expr"]: r["status"] for r in v["learned"]["rules"] if r["source"] == "prior"}
    assert set(prior) == set(exprs)
    db = sqlite3.connect(os.path.join(out, "runs.sqlite"))
    rows = [AbstractInput.loads(r[0]) for r in db.execute("SELECT input FROM candidates ORDER BY idx")]
    db.close()
    assert len(rows) >= 12
    kept = [e for e, s in prior.items() if s == KEPT]
    assert kept
    inside = [ai for ai in rows if ai.origin.get("rules") != "outside"]
    assert len(inside) >= len(rows) // 2  # (1 in 16 on average checks the rules)
    for ai in inside:
        for e in kept:
            assert holds(e, ai), (e, ai.args)
    assert any(ai.origin.get("repaired") for ai in inside)


def test_prior_rules_need_learn_rules(tmp_path, capsys):
    rules = tmp_path / "prior.yaml"
    rules.write_text("rules: {}\n")
    rc = main(["campaign", "--api", "tf.raw_ops.Add", "--budget", "2", "--out", str(tmp_path / "o"),
               "--prior-rules", str(rules), "--no-progress"])
    assert rc == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and "--prior-rules" in err[0]


def test_repair_draws_small_int_tensor_values_within_their_bounds():
    """Rules on the values of small int tensors (learned from "2 is missing
    from {0,0,1}", "Expected begin[0] in [0, 17]", "paddings must be less than
    the dimension size"): the elements are drawn at random within their
    bounds, distinct ones without replacement, so a permutation, a slice and
    the paddings of a reflection come out valid; and each draw differs."""
    from acetest_ml.learn.patterns import _MACROS
    from acetest_ml.learn.evaluate import _elements
    perm = ["perm.rank == 1 and perm.dim[0] == x.rank", _MACROS["permutation"]("perm", "x.rank")]
    sl = ["begin.rank == 1 and size.rank == 1 and begin.dim[0] == input.rank and size.dim[0] == input.rank",
          _MACROS["values_le_dims"]("begin", "input"), _MACROS["sizes_le_dims"]("size", "begin", "input")]
    pad = ["paddings.rank == 2 and paddings.dim[1] == 2 and paddings.dim[0] == input.rank",
           _MACROS["pad_le_dims"]("paddings", "input", 1)]
    perms, begins = set(), set()
    for seed in range(40):
        rng = random.Random(seed)
        ai = AbstractInput("tf.raw_ops.Transpose", {"x": TensorDesc("float32", (2, 3, 4, 5)),
                                                    "perm": TensorDesc("int32", (seed % 7,), -1024, 1024)}, seed)
        fixed = repair_all(perm, ai, rng)
        assert fixed is not None and all(holds(r, fixed) for r in perm)
        p = fixed.args["perm"].values
        assert sorted(p) == [0, 1, 2, 3]
        perms.add(p)
        ai = AbstractInput("tf.raw_ops.Slice", {"input": TensorDesc("float32", (17, 25, 10)),
                                                "begin": TensorDesc("int32", (2,), -1024, 1024),
                                                "size": TensorDesc("int64", (3, 1), -1024, 1024)}, seed)
        fixed = repair_all(sl, ai, rng)
        assert fixed is not None
        b, s = fixed.args["begin"].values, fixed.args["size"].values
        assert all(0 <= b[i] <= d and 0 <= s[i] <= d - b[i] for i, d in enumerate((17, 25, 10)))
        begins.add(b)
        ai = AbstractInput("tf.raw_ops.MirrorPad", {"input": TensorDesc("float32", (3, 4, 5)),
                                                    "paddings": TensorDesc("int32", (3, 2), -1024, 1024),
                                                    "mode": "REFLECT"}, seed)
        fixed = repair_all(pad, ai, rng)
        assert fixed is not None
        v = _elements(fixed.args["paddings"], seed, "paddings")
        assert all(0 <= v[2 * i + j] < d for i, d in enumerate((3, 4, 5)) for j in (0, 1))
    assert len(perms) > 10 and len(begins) > 10   # drawn, not set to a bound


@needs_acetest_data
def test_value_rules_make_acetest_transpose_and_pad_valid(tmp_path):
    """On ACETest's own constraints Transpose and Pad never pass (perm and
    paddings hold random values in [-1024, 1024]); with --learn-rules the
    messages teach perm's length and permutation and the paddings' sign and
    shape, repaired draws meet them, and most later runs pass."""
    out = str(tmp_path / "ace")
    apis = ["tf.raw_ops.Transpose", "tf.raw_ops.Pad"]
    assert main(["campaign", *sum((["--api", a] for a in apis), []), "--constraints", "acetest",
                 "--acetest-data", ACETEST_DATA, "--budget", "60", "--seed", "2", "--out", out,
                 "--jobs", "1", "--no-progress", "--learn-rules"]) == 0
    s = json.load(open(os.path.join(out, "summary.json")))["apis"]
    tr = {r["expr"]: r["status"] for r in s["tf.raw_ops.Transpose"]["learned"]["rules"]}
    assert any(e.startswith("perm.rank == 1 and (perm.dim[0] <= 0 or") and st == KEPT for e, st in tr.items()), tr
    for api in apis:
        assert s[api]["pass_rate"] >= 0.5, (api, s[api]["pass_rate"])
