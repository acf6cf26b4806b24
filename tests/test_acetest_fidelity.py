"""Our ACETest mode is faithful to upstream's Tester by default (real op_json and
constraint files, real Z3); ``--acetest-extensions`` switches our improvements
back on. Each rule below is one upstream behaviour (see
acetest_ml/solve/acetest_problem.py)."""
from __future__ import annotations

import random

import pytest
import z3

from acetest_ml.settings import SettingError
from acetest_ml.model import TensorDesc
from acetest_ml.settings import CampaignConfig
from acetest_ml.solve.acetest_problem import (
    FAITHFUL_SOLVER_PARAMS, GOAL_VARIANTS, AcetestProblem, explicit_entries,
)
from acetest_ml.solve.fill import HUGE_VALUE, fill_args
from acetest_ml.solve.sampler import Sampler
from acetest_ml.spec.acetest_data import AcetestData

from helpers import ACETEST_DATA, needs_acetest_data

pytestmark = needs_acetest_data


@pytest.fixture(scope="module")
def data() -> AcetestData:
    return AcetestData(ACETEST_DATA)


@pytest.fixture(scope="module")
def s2d(data):
    """SpaceToDepth: one satisfiable constraint set, a dimension array, an int and a format."""
    return data.load("tf.raw_ops.SpaceToDepth"), data.load("tf.raw_ops.SpaceToDepth", extensions=True)


def test_four_goal_variants_per_constraint_set(s2d):
    faithful, ext = s2d
    assert len(ext.problems) == 1
    base = ext.problems[0].set_id
    assert [p.set_id for p in faithful.problems] == [f"{base}#v{k}" for k in range(4)]
    assert [p.variant for p in faithful.problems] == list(GOAL_VARIANTS)
    assert GOAL_VARIANTS[2] == GOAL_VARIANTS[3] == (True, True)   # upstream repeats its third
    assert all(not p.extensions for p in faithful.problems) and ext.problems[0].extensions
    # a variant's minimum dimension size is a formula, not a per-draw choice
    p0, p1 = faithful.problems[0], faithful.problems[1]
    arr = next(s.term.arg(0) for s in p1.selects if s.part == "dims")
    for p, forced_zero in ((p0, z3.sat), (p1, z3.unsat)):
        s = z3.Solver(ctx=p.ctx)
        s.add(p.formulas())
        s.add(arr[z3.BitVecVal(0, 64, p.ctx)] == z3.BitVecVal(0, 64, p.ctx))
        assert s.check() == forced_zero


def test_solver_params_turn_model_compaction_off(s2d):
    faithful, ext = s2d
    assert FAITHFUL_SOLVER_PARAMS == {"model.compact": False}
    assert all(p.solver_params == {"model.compact": False} for p in faithful.problems)
    assert ext.problems[0].solver_params == {}
    assert faithful.problems[0].enumeration == "all_smt" and ext.problems[0].enumeration is None


def test_array_entries_are_explicit_unsigned_and_at_most_index_20(s2d):
    faithful, ext = s2d
    p = faithful.problems[0]
    arr = next(s.term.arg(0) for s in p.selects if s.part == "dims")
    bv = lambda v: z3.BitVecVal(v, 64, p.ctx)  # noqa: E731
    s = z3.Solver(ctx=p.ctx)
    s.set("model.compact", False)
    s.add(p.formulas())
    # entries the formulas never read: index 7 = -1, index 25 = 3, index -1 = 2
    s.add(arr[bv(7)] == bv(-1), arr[bv(25)] == bv(3), arr[bv(-1)] == bv(2))
    assert s.check() == z3.sat
    m = s.model()
    raw = dict(explicit_entries(m, arr))
    assert raw[7] == 2 ** 64 - 1 and raw[25] == 3 and raw[2 ** 64 - 1] == 2   # unsigned
    _, entries, _ = p._solved(m)
    got = entries[("input", "dims")]
    assert got[7] == 2 ** 64 - 1 and 25 not in got and all(0 <= i <= 20 for i in got)
    assert -1 not in got
    # the filler leaves a size above 16 open (a random 0..32), never negative
    ai = p.decode(m, random.Random(0))
    assert all(0 <= d <= 32 for d in ai.args["input"].shape)
    # extensions: the formulas' reads, as signed numbers (index 25 was never read)
    q = ext.problems[0]
    _, e2, _ = q._solved(m.translate(q.ctx) if q.ctx != p.ctx else m)
    assert all(i <= 20 for i in e2.get(("input", "dims"), {}))


def test_models_come_in_upstreams_all_smt_order(data):
    api = data.load("tf.raw_ops.OneHot")
    p = api.problems[0]
    terms = p.enum_terms()
    assert [str(t) for t in terms][:2] == ["ARGNAME_indices_NAMEEND_DIM", "ARGNAME_on_value_NAMEEND_DIM"]
    s = z3.Solver(ctx=p.ctx)
    s.add(p.formulas())
    ms = []
    for m in p.enumerate_models(s):
        ms.append(m)
        if len(ms) == 4:
            break
    t0 = terms[0]
    first = [m.eval(t0, model_completion=True).as_long() for m in ms]
    # depth first on the first term: each model blocks every earlier value of it
    assert len(set(first)) == 4
    assert s.num_scopes() >= 3          # still inside the enumeration


def _spec_problem(data, api: str, extensions: bool) -> AcetestProblem:
    loaded = data.load(api, extensions=extensions)
    return next(p for p in loaded.problems if p.constrained)


def test_solved_ints_are_mutated_and_int_enums_chosen_from(data):
    rng = random.Random(3)
    for ext in (False, True):
        p = _spec_problem(data, "tf.raw_ops.OneHot", ext)
        zeros = huge = 0
        for _ in range(3000):
            args, solved = fill_args(p, rng, {("depth", "value"): 5}, {}, False)
            v = args["depth"]
            zeros += v == 0
            huge += abs(v) > 2 ** 32
            assert "depth" in solved
        if ext:
            assert zeros == huge == 0
        else:   # 1% zero, large values with 1% (and every value in 1% of the runs)
            assert 10 <= zeros <= 80 and 30 <= huge <= 150
    # an int enum (SpaceToDepth has none; build one on a real spec) ignores the solved value
    p = _spec_problem(data, "tf.raw_ops.SpaceToDepth", False)
    p.spec.arg("block_size").allowed = [2, 3]
    vals = {fill_args(p, rng, {("block_size", "value"): 9}, {}, False)[0]["block_size"]
            for _ in range(50)}
    assert vals <= {2, 3} | {0} or max(map(abs, vals)) > 2 ** 32   # mutations aside
    assert 9 not in vals


def test_element_count_sets_the_shape_as_upstream(data):
    rng = random.Random(1)
    p = _spec_problem(data, "tf.raw_ops.OneHot", False)
    q = _spec_problem(data, "tf.raw_ops.OneHot", True)
    # rank 1: the shape is [count], solved sizes or not
    args, _ = fill_args(p, rng, {("indices", "rank"): 1, ("indices", "numel"): 4}, {}, False)
    assert args["indices"].shape == (4,)
    # one element at rank 3: upstream's [1]; extensions: ones of the solved rank
    args, _ = fill_args(p, rng, {("indices", "rank"): 3, ("indices", "numel"): 1}, {}, False)
    assert args["indices"].shape == (1,)
    args, _ = fill_args(q, rng, {("indices", "rank"): 3, ("indices", "numel"): 1}, {}, False)
    assert args["indices"].shape == (1, 1, 1)


def test_extensions_switch_through_the_config(tmp_path):
    from acetest_ml.campaign import resolve
    api = "tf.raw_ops.SpaceToDepth"
    base = dict(apis=[api], out=str(tmp_path / "c"), constraints="acetest", acetest_data=ACETEST_DATA)
    _, faithful, notes = resolve(CampaignConfig(**base), api)
    _, ext, notes2 = resolve(CampaignConfig(**base, acetest_extensions=True), api)
    assert len(faithful) == 4 and len(ext) == 1
    assert notes["acetest_extensions"] is False and notes2["acetest_extensions"] is True
    with pytest.raises(SettingError, match="acetest_extensions"):
        CampaignConfig(**base, acetest_extensions="yes")


def test_faithful_sampling_is_seeded_and_repeatable(data):
    def draw(seed: int) -> list[str]:
        api = data.load("tf.raw_ops.SpaceToDepth")
        return [x.dumps() for x in Sampler(api.problems, seed=seed, models_per_set=3).take(24)]

    a, b, c = draw(4), draw(4), draw(5)
    assert a == b and a != c
    # models are reused (3 per set) and refilled: every draw a full input
    for s in a:
        assert '"input"' in s and '"block_size"' in s
    ext = data.load("tf.raw_ops.SpaceToDepth", extensions=True)
    xs = Sampler(ext.problems, seed=4, models_per_set=3).take(24)
    for ai in xs:   # extensions keep every input inside its formulas
        assert ext.problems[0].check_input(ai)
    assert isinstance(xs[0].args["input"], TensorDesc) and HUGE_VALUE == 2 ** 64 - 1
