"""Cheap candidates (solve/sampler.py cheap=True, solve/check.py): mutated
pooled models satisfy the constraints (checked with real Z3), learned rules
hold, seeds repeat, distinctness holds, the compiled checker agrees with Z3,
and cheap=False is the old scheme."""
from __future__ import annotations

import random

import pytest
import z3

from acetest_ml.solve.check import Checker, Unsupported
from acetest_ml.solve.registry import RegistryProblem
from acetest_ml.solve.sampler import Z3_EVERY, Sampler
from acetest_ml.spec import get_spec

MM_RULES = ["self.rank == 2", "mat2.rank == 2", "self.dim[1] == mat2.dim[0]", "self.dim[0] % 2 == 0", "mat2.dim[-1] + self.dim[0] <= 12"]


def _z3_holds(p: RegistryProblem, values: dict) -> bool:
    sub = [(var, z3.BoolVal(bool(values[n]), p.ctx) if z3.is_bool(var) else z3.IntVal(int(values[n]), p.ctx))
           for n, var in p._vars.items()]
    return z3.is_true(z3.simplify(z3.substitute(z3.And(*p.formulas()), *sub)))


def _draw(p, n, seed=5, cheap=True):
    s = Sampler([p], seed=seed, cheap=cheap)
    out = []
    for _ in range(n):
        ai = s.next()
        out.append((ai, s.last_values))
    return s, out


@pytest.mark.parametrize("api,rules,n", [("tf.raw_ops.Conv2D", [], 100), ("torch.ops.aten.mm", MM_RULES, 200)])
def test_cheap_candidates_satisfy_constraints(api, rules, n):
    p = RegistryProblem(get_spec(api), rules)
    s, drawn = _draw(p, n)
    assert s.stats.mutated_draws >= n // 2        # most candidates are cheap
    assert s.stats.z3_draws >= n // Z3_EVERY      # and Z3 keeps its share
    assert s.stats.solver_calls < n               # fewer solver calls than candidates
    bad = [v for _, v in drawn if not _z3_holds(p, v)]
    assert not bad
    if rules:  # learned / given rules hold on the decoded inputs too
        for ai, _ in drawn:
            a, b = ai.args["self"].shape, ai.args["mat2"].shape
            assert a[1] == b[0] and a[0] % 2 == 0 and b[-1] + a[0] <= 12


def test_seeded_and_distinct():
    spec = get_spec("torch.ops.aten.gather")
    one = [ai.dumps() for ai, _ in _draw(RegistryProblem(spec), 120, seed=9)[1]]
    two = [ai.dumps() for ai, _ in _draw(RegistryProblem(spec), 120, seed=9)[1]]
    other = [ai.dumps() for ai, _ in _draw(RegistryProblem(spec), 120, seed=10)[1]]
    assert one == two and one != other
    s, drawn = _draw(RegistryProblem(spec), 200, seed=9)
    assert len({tuple(v.values()) for _, v in drawn}) == 200  # no assignment repeats
    old = _draw(RegistryProblem(spec), 200, seed=9, cheap=False)[1]

    def shapes(items):
        return len({tuple(sorted((k, str(getattr(x, "shape", x))) for k, x in ai.args.items()))
                    for ai, _ in items})
    assert shapes(drawn) >= 0.8 * shapes(old)


def test_cheap_false_is_the_old_scheme():
    p = RegistryProblem(get_spec("tf.raw_ops.BiasAdd"))
    s = Sampler([p], seed=3, cheap=False)
    ais = [s.next() for _ in range(30)]
    assert s.stats.mutated_draws == 0 and s.stats.z3_draws == 0
    assert s.stats.solver_calls >= 30
    # the old decode path and the assignment path give the same input
    q = RegistryProblem(get_spec("tf.raw_ops.BiasAdd"))
    s2 = Sampler([q], seed=3, cheap=False)
    s2.next()
    solver = z3.Solver(ctx=q.ctx)
    solver.add(*q.formulas())
    assert solver.check() == z3.sat
    m = solver.model()
    assert q.decode(m, random.Random(1)).dumps() == q.decode_values(q.model_values(m), random.Random(1)).dumps()
    assert ais[0].origin["set"] == "registry"


def test_checker_agrees_with_z3_on_random_assignments():
    ctx = z3.Context()
    x, y, w = (z3.Int(n, ctx) for n in "xyw")
    b = z3.Bool("b", ctx)
    formulas = [z3.Implies(b, x + 2 * y <= w), z3.Or(x % 3 == 1, y / 2 == w - 1, z3.Not(b)),
                z3.If(x > y, x - y, y - x) >= 2, z3.Distinct(x, y, w), -x < 4,
                z3.Xor(b, y >= 0), x % -3 == 2, (x - w) / -2 >= y, z3.And(w >= -5, w <= 5)]
    chk = Checker(formulas)
    rng = random.Random(0)
    agree = holds = 0
    for _ in range(400):
        env = {"x": rng.randint(-9, 9), "y": rng.randint(-9, 9), "w": rng.randint(-9, 9),
               "b": rng.random() < 0.5}
        sub = [(x, z3.IntVal(env["x"], ctx)), (y, z3.IntVal(env["y"], ctx)), (w, z3.IntVal(env["w"], ctx)),
               (b, z3.BoolVal(env["b"], ctx))]
        failing = chk.failing(env)
        for i, f in enumerate(formulas):
            want = z3.is_true(z3.simplify(z3.substitute(f, *sub)))
            agree += want == (i not in failing)
        holds += chk.check(env)
        assert chk.check(env) == (not chk.failing(env))
    assert agree == 400 * len(formulas)
    assert 0 < holds < 400
    # only the formulas of the changed variables are evaluated
    env = {"x": 0, "y": 0, "w": 0, "b": False}
    assert not chk.check(env)
    assert chk.check(env, changed=["nothing"])
    with pytest.raises(Unsupported):
        Checker([z3.Real("r", ctx) > 0])


def test_checker_reuses_closures_across_contexts():
    """A rule set's problem repeats the API's own formulas in a context of
    its own: they are compiled once per process, and the reused closures
    judge exactly like freshly compiled ones."""
    from acetest_ml.solve import check
    spec = get_spec("torch.ops.aten.mm")
    first = RegistryProblem(spec, MM_RULES)
    check._COMPILED.clear()
    Checker(first.formulas())
    n = len(check._COMPILED)
    again = RegistryProblem(spec, MM_RULES)  # new context, the same formulas
    assert again.ctx is not first.ctx
    reused = Checker(again.formulas())
    assert len(check._COMPILED) == n
    check._COMPILED.clear()
    fresh = Checker(again.formulas())
    s = z3.Solver(ctx=again.ctx)
    s.add(*again.formulas())
    assert s.check() == z3.sat
    good = again.model_values(s.model())
    rng = random.Random(3)
    for _ in range(200):
        env = {k: (v + rng.randint(-2, 2) if isinstance(v, int) and not isinstance(v, bool) else v)
               for k, v in good.items()}
        assert reused.failing(env) == fresh.failing(env)
    assert reused.by_var == fresh.by_var


def test_checker_covers_registry_and_learned_formulas():
    p = RegistryProblem(get_spec("torch.ops.aten.mm"), MM_RULES)
    chk = Checker(p.formulas())
    s = z3.Solver(ctx=p.ctx)
    s.add(*p.formulas())
    assert s.check() == z3.sat
    good = p.model_values(s.model())
    assert chk.check(good)
    broken = dict(good, **{"self.d1": good["mat2.d0"] + 1})
    assert not chk.check(broken, changed=["self.d1"])
    assert not _z3_holds(p, broken)


def test_learning_sampler_recompiles_with_rules():
    from acetest_ml.learn.sampling import LearningSampler
    spec = get_spec("torch.ops.aten.mm")
    # (no outside share: every draw here is under the forced rule set)
    ls = LearningSampler(spec, [RegistryProblem(spec)], seed=1, outside_share=0.0)
    first = ls.sampler
    assert first._sets[0].checker is not None
    # the learner adopts rules from runs; here a rule set is forced by hand
    ls.base_rules = MM_RULES[:3]
    ls.learner.active = lambda: ["self.dim[0] == 3"]  # type: ignore[method-assign]
    ls._new_epoch()
    assert ls.sampler is not first
    st = ls.sampler._sets[0]
    assert st.checker is not None and "self.d0" in st.checker.names
    for _ in range(80):
        ai = ls.next()
        a, b = ai.args["self"].shape, ai.args["mat2"].shape
        assert a[0] == 3 and a[1] == b[0]
    assert ls.sampler.stats.mutated_draws > 40


def test_cheap_candidates_keep_changing_the_structure():
    """Mutations also change ranks and dtypes (checked like any other), so a
    cheap sampler reaches every dtype and many ranks of a spec well before
    Z3 has been asked for as many models."""
    import dataclasses
    spec = get_spec("torch.ops.aten.erfinv")
    dtypes = ["float32", "float64", "int32", "complex64"]
    spec = dataclasses.replace(spec, args=[dataclasses.replace(spec.args[0], dtypes=dtypes)])
    sampler = Sampler([RegistryProblem(spec, [])], seed=1)
    got = [sampler.next().args["self"] for _ in range(60)]
    assert sampler.stats.z3_draws < 15
    assert {t.dtype for t in got} == set(dtypes)
    assert len({len(t.shape) for t in got}) >= 5
