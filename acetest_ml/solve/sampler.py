"""Draw many distinct, seeded solutions from one or more Problems.

For each draw the sampler picks one of the API's constraint sets, asks Z3 for
a model under random target assumptions (dropping them in halves while they
make the set unsat), blocks the model so the next draw differs, and decodes
the model into an AbstractInput. When a set runs out of distinct models its
blocking clauses are dropped and it starts over. Everything is driven by one
``random.Random(seed)``: the same problems and seed give the same sequence.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Iterator, Optional, Sequence

import z3

from ..model import AbstractInput
from .problem import Problem, limit


@dataclass
class _SetState:
    problem: Problem
    solver: z3.Solver
    blocked: int = 0
    exhausted_rounds: int = 0
    unsat: bool = False
    pool: list = field(default_factory=list)   # models kept for reuse
    pool_closed: bool = False                  # no new distinct model left
    models: Optional[Iterator] = None          # ACETest enumeration (enumerate_models)


@dataclass
class SamplerStats:
    draws: int = 0
    solver_calls: int = 0
    resets: int = 0
    unsat_sets: list[str] = field(default_factory=list)


class NoSolutionError(Exception):
    """None of the API's constraint sets is satisfiable."""


class Sampler:
    def __init__(self, problems: Sequence[Problem], seed: int, *, timeout_ms: int = 2000,
                 max_blocked: int = 5000, models_per_set: int | None = None):
        """``models_per_set``: solve at most this many distinct models per
        constraint set and afterwards reuse a random one of them for each
        draw (decode fills the open parts anew every time) — ACETest's own
        scheme, which draws a few models per set up front. None: a new
        model for every draw."""
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
            self._sets.append(_SetState(p, s))
        self.index = 0

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
            ai = st.problem.decode(model, self.rng)
            ai.origin.setdefault("set", st.problem.set_id)
            ai.origin["draw"] = self.index
            ai.value_seed = self.rng.randrange(2 ** 31)
            self.index += 1
            self.stats.draws += 1
            return ai

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
