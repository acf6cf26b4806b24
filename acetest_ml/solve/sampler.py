"""Draw many distinct, seeded solutions from one or more Problems.

For each draw the sampler picks one of the API's constraint sets, asks Z3 for
a model under random target assumptions (dropping them in halves while they
make the set unsat), blocks the model so the next draw differs, and decodes
the model into an AbstractInput. When a set runs out of distinct models its
blocking clauses are dropped and it starts over. Everything is driven by one
``random.Random(seed)``: the same problems and seed give the same sequence.

Cheap candidates (``cheap=True``, the default, for problems that support it:
registry constraints). A Z3 model costs milliseconds; most candidates are
instead derived from a pool of solved models, per structural choice (ranks,
lengths, presence, dtypes, enum codes): a pooled model has a few dims, list
items or int values redrawn with numpy within their bounds, and the mutated
assignment is checked against the problem's formulas (learned rules
included) by Python closures compiled once from the Z3 terms (``check``).
A mutation that breaks a formula, or repeats an earlier candidate, is
retried a few times and then the candidate comes from Z3. At least one
candidate in ``Z3_EVERY`` is solved by Z3 (new structures keep coming), and
every Z3 model joins the pool. ``cheap=False`` is the old scheme: every
candidate from Z3. Seeded as before: the numpy generator is seeded from the
sampler's seed.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Iterator, Optional, Sequence

import numpy as np
import z3

from ..model import AbstractInput
from .check import Checker, Unsupported
from .problem import Problem, limit

#: at least one candidate in this many comes from Z3 (cheap sampling)
Z3_EVERY = 16
#: Z3 models a set pools before mutations start
WARM_MODELS = 4
#: mutations tried for one candidate before it is asked of Z3
MUTATION_TRIES = 8
#: a variable whose mutations failed this often (and never passed) is frozen
FREEZE_AFTER = 12
#: models pooled per constraint set (later ones replace random pooled ones)
POOL_MAX = 512


@dataclass
class _SetState:
    problem: Problem
    solver: z3.Solver
    blocked: int = 0
    exhausted_rounds: int = 0
    unsat: bool = False
    pool: list = field(default_factory=list)   # models kept for reuse
    pool_closed: bool = False                  # no new distinct model left
    # cheap sampling
    checker: Checker | None = None
    cheap_pool: list = field(default_factory=list)       # assignments of pooled Z3 models
    structures: dict = field(default_factory=dict)       # structure key -> pooled models
    seen: set = field(default_factory=set)               # assignments drawn so far
    since_z3: int = 0
    tries: dict = field(default_factory=dict)            # var -> [mutations, passed]
    frozen: set = field(default_factory=set)
    models: Optional[Iterator] = None          # ACETest enumeration (enumerate_models)


@dataclass
class SamplerStats:
    draws: int = 0
    solver_calls: int = 0
    resets: int = 0
    unsat_sets: list[str] = field(default_factory=list)
    z3_draws: int = 0            # candidates decoded from a Z3 model
    mutated_draws: int = 0       # candidates from a mutated pooled model
    mutations_failed: int = 0    # mutations a check (or the seen set) refused
    cheap_off: list[str] = field(default_factory=list)  # sets the checker could not compile


class NoSolutionError(Exception):
    """None of the API's constraint sets is satisfiable."""


class Sampler:
    def __init__(self, problems: Sequence[Problem], seed: int, *, timeout_ms: int = 2000,
                 max_blocked: int = 5000, models_per_set: int | None = None, cheap: bool = True,
                 warm_models: int = WARM_MODELS):
        """``models_per_set``: solve at most this many distinct models per
        constraint set and afterwards reuse a random one of them for each
        draw (decode fills the open parts anew every time) — ACETest's own
        scheme, which draws a few models per set up front. None: a new
        model for every draw. ``cheap``: derive most candidates from pooled
        models of problems that support it (``Problem.cheap``); False: the
        old scheme. ``warm_models``: Z3 models a cheap set pools before it
        mutates them."""
        if not problems:
            raise NoSolutionError("no constraint sets")
        self.rng = random.Random(seed)
        self.seed = seed
        self.models_per_set = models_per_set
        self.timeout_ms = timeout_ms
        self.max_blocked = max_blocked
        self.stats = SamplerStats()
        self._sets: list[_SetState] = []
        for i, p in enumerate(problems):
            s = z3.Solver(ctx=p.ctx or z3.main_ctx())
            s.set("random_seed", (seed * 7919 + i) % (2 ** 31))
            for k, v in getattr(p, "solver_params", {}).items():
                s.set(k, v)
            limit(s, timeout_ms)
            s.add(*p.formulas())
            st = _SetState(p, s)
            if cheap and getattr(p, "cheap", False) and models_per_set is None:
                try:
                    st.checker = Checker(p.formulas())
                except Unsupported:
                    self.stats.cheap_off.append(p.set_id)
            self._sets.append(st)
        self.cheap = cheap
        self.warm_models = max(1, int(warm_models))
        self.np_rng = np.random.default_rng([seed & 0xFFFFFFFF, (seed >> 32) & 0xFFFFFFFF, 0x5EED]) \
            if any(st.checker is not None for st in self._sets) else None
        self.index = 0
        #: the assignment of the last cheap candidate (tests check it with Z3)
        self.last_values: dict | None = None

    def _live(self) -> list[_SetState]:
        return [st for st in self._sets if not st.unsat]

    def _enumerated(self, st: _SetState) -> z3.ModelRef | None:
        """The next model of a problem that enumerates its own models (ACETest's
        all_smt order); its random targets, drawn once, are hard constraints."""
        if st.models is None:
            for t in st.problem.random_targets(self.rng):
                st.solver.add(t)
            st.models = iter(st.problem.enumerate_models(st.solver))  # type: ignore[attr-defined]
        self.stats.solver_calls += 1
        return next(st.models, None)

    def _solve(self, st: _SetState) -> z3.ModelRef | None:
        """Solve under the problem's random targets. Each target is guarded by
        a tracking literal; when the targets conflict with the constraints,
        one member of the unsat core is dropped and the solver tries again,
        so only conflicting targets are lost."""
        targets = st.problem.random_targets(self.rng)
        solver = st.solver
        solver.push()
        try:
            lits = []
            for i, t in enumerate(targets):
                lit = z3.Bool(f"__target{i}", solver.ctx)
                solver.add(z3.Implies(lit, t))
                lits.append(lit)
            # keyed by str(): printing the literals is part of the seeded stream (Z3's
            # later models changed when they were keyed by name instead; the golden
            # hashes of tests/test_acetest_split.py hold this)
            active = {str(l): l for l in lits}
            while True:
                self.stats.solver_calls += 1
                r = solver.check(*active.values())
                if r == z3.sat:
                    return solver.model()
                if not active:
                    return None
                if r == z3.unknown:
                    active = {}
                    continue
                core = [str(c) for c in solver.unsat_core() if str(c) in active]
                if not core:
                    active = {}
                    continue
                # drop a random half of the core (at least one literal)
                self.rng.shuffle(core)
                for name in core[: max(1, len(core) // 2)]:
                    del active[name]
        finally:
            solver.pop()

    def next(self) -> AbstractInput:
        while True:
            live = self._live()
            if not live:
                raise NoSolutionError("no satisfiable constraint set: "
                                      + ", ".join(self.stats.unsat_sets))
            st = live[self.rng.randrange(len(live))]
            if st.checker is not None:
                values = self._cheap(st)
                if values is None:
                    continue
                self.last_values = values
                return self._emit(st, st.problem.decode_values(values, self.rng))
            reuse = self.models_per_set is not None and st.pool and (
                len(st.pool) >= self.models_per_set or st.pool_closed)
            if reuse:
                model = st.pool[self.rng.randrange(len(st.pool))]
            else:
                enumerated = getattr(st.problem, "enumeration", None) == "all_smt"
                model = self._enumerated(st) if enumerated else self._solve(st)
                if model is None:
                    if st.blocked == 0:
                        st.unsat = True
                        self.stats.unsat_sets.append(st.problem.set_id)
                        continue
                    if self.models_per_set is not None:
                        st.pool_closed = True  # every distinct model is in the pool
                        continue
                    self._reset(st)
                    continue
                blk = None if enumerated else st.problem.block(model)
                if enumerated:
                    st.blocked += 1
                if blk is not None:
                    st.solver.add(blk)
                    st.blocked += 1
                    if st.blocked >= self.max_blocked and self.models_per_set is None:
                        self._reset(st)
                if self.models_per_set is not None:
                    st.pool.append(model)
            return self._emit(st, st.problem.decode(model, self.rng))

    def _emit(self, st: _SetState, ai: AbstractInput) -> AbstractInput:
        ai.origin.setdefault("set", st.problem.set_id)
        ai.origin["draw"] = self.index
        ai.value_seed = self.rng.randrange(2 ** 31)
        self.index += 1
        self.stats.draws += 1
        return ai

    # -- cheap sampling ---------------------------------------------------------
    def _cheap(self, st: _SetState) -> dict | None:
        """The assignment of the next candidate of a cheap set: a checked
        mutation of a pooled model, or a Z3 model (then pooled). None when
        the set changed state (unsat, reset): the caller draws again."""
        if len(st.cheap_pool) >= self.warm_models and st.since_z3 < Z3_EVERY - 1:
            values = self._mutation(st)
            if values is not None:
                st.since_z3 += 1
                self.stats.mutated_draws += 1
                return values
        model = self._solve(st)
        if model is None:
            if st.blocked == 0:
                st.unsat = True
                self.stats.unsat_sets.append(st.problem.set_id)
            else:
                self._reset(st)
                st.seen.clear()
            return None
        blk = st.problem.block(model)
        if blk is not None:
            st.solver.add(blk)
            st.blocked += 1
            if st.blocked >= self.max_blocked:
                self._reset(st)
                st.seen.clear()
        values = st.problem.model_values(model)
        st.seen.add(tuple(values.values()))
        assert st.checker is not None
        if st.checker.check(values):  # a model the closures disagree with is not mutated
            key = st.problem.structure_key(values)
            st.structures.setdefault(key, []).append(values)
            if len(st.cheap_pool) < POOL_MAX:
                st.cheap_pool.append(values)
            else:
                st.cheap_pool[self.rng.randrange(POOL_MAX)] = values
        st.since_z3 = 0
        self.stats.z3_draws += 1
        return values

    def _mutation(self, st: _SetState) -> dict | None:
        assert st.checker is not None and self.np_rng is not None
        for _ in range(MUTATION_TRIES):
            pool = st.cheap_pool
            base = pool[self.rng.randrange(len(pool))]
            donor = pool[self.rng.randrange(len(pool))]
            got = st.problem.mutate(base, self.np_rng, st.frozen, donor)
            if got is None:
                continue
            values, changed = got
            key = tuple(values.values())
            ok = key not in st.seen and st.checker.check(values, changed)
            for name in set(changed):
                t = st.tries.setdefault(name, [0, 0])
                t[0] += 1
                t[1] += ok
                if t[1] == 0 and t[0] >= FREEZE_AFTER:
                    st.frozen.add(name)
            if ok:
                st.seen.add(key)
                return values
            self.stats.mutations_failed += 1
        return None

    def _reset(self, st: _SetState) -> None:
        """Forget the blocking clauses of a set (its distinct models ran out)."""
        s = z3.Solver(ctx=st.problem.ctx or z3.main_ctx())
        s.set("random_seed", self.rng.randrange(2 ** 31))
        limit(s, self.timeout_ms)
        for k, v in getattr(st.problem, "solver_params", {}).items():
            s.set(k, v)
        s.add(*st.problem.formulas())
        st.solver = s
        st.models = None
        st.blocked = 0
        st.exhausted_rounds += 1
        self.stats.resets += 1

    def take(self, n: int) -> list[AbstractInput]:
        return [self.next() for _ in range(n)]

    def __iter__(self) -> Iterator[AbstractInput]:
        while True:
            yield self.next()
