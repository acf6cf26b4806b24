"""The interface between constraint sources and the sampler.

A Problem is one conjunction of Z3 formulas for one API (one "constraint set";
an API can have several alternative sets, e.g. ACETest's compute x constructor
combinations) plus the knowledge needed to turn a Z3 model into an
AbstractInput. Sources implement it:

- ``acetest_ml.solve.registry``  formulas derived from an ApiSpec (+ YAML rules)
- ``acetest_ml.solve.acetest_problem``   ACETest's extracted .z3 files (read by
  ``smt2``, walked by ``z3walk``, filled by ``fill``)

The sampler (``acetest_ml.solve.sampler``) only talks to this interface.
"""
from __future__ import annotations

import random
from abc import ABC, abstractmethod
from typing import Sequence

import z3

from ..model import AbstractInput, ApiSpec


class Problem(ABC):
    spec: ApiSpec
    #: short identifier of this constraint set, recorded in AbstractInput.origin
    set_id: str = "default"
    #: the Z3 context every term of this problem lives in. Give each problem
    #: its own ``z3.Context()``: Z3's choices depend on the context's history,
    #: so a private context is what makes sampling repeatable for a seed.
    ctx: z3.Context = None  # type: ignore[assignment]
    #: whether the cheap sampler may mutate this problem's solved models
    #: (the problem then implements ``model_values``, ``decode_values``,
    #: ``structure_key`` and ``mutate``, see ``registry.RegistryProblem``)
    cheap: bool = False

    @abstractmethod
    def formulas(self) -> Sequence[z3.BoolRef]:
        """Hard constraints (including default bounds)."""

    @abstractmethod
    def random_targets(self, rng: random.Random) -> list[z3.BoolRef]:
        """Random equalities/inequalities over the decision variables; the
        sampler tries them as assumptions to spread solutions out and drops
        them (in part, then wholly) when they make the problem unsat."""

    @abstractmethod
    def block(self, model: z3.ModelRef) -> z3.BoolRef | None:
        """A clause excluding this model's values of the variables that
        matter for the input (so the next solution is distinct)."""

    @abstractmethod
    def decode(self, model: z3.ModelRef, rng: random.Random) -> AbstractInput:
        """Turn a model into an AbstractInput, filling at random whatever the
        model leaves open. ``rng`` is the only randomness allowed."""

    # cheap sampling (only where ``cheap`` is True) ------------------------------
    def model_values(self, model: z3.ModelRef) -> dict[str, int]:
        """The model as an assignment {variable name: value}."""
        raise NotImplementedError

    def decode_values(self, values: dict[str, int], rng: random.Random) -> AbstractInput:
        """``decode`` from an assignment."""
        raise NotImplementedError

    def structure_key(self, values: dict[str, int]) -> tuple:
        """The structural choice of an assignment (what mutations keep)."""
        raise NotImplementedError

    def mutate(self, values: dict[str, int], rng, frozen=frozenset(),
               donor: dict | None = None) -> tuple[dict[str, int], list[str]] | None:
        """A mutated copy of ``values`` and the names changed (unchecked)."""
        raise NotImplementedError

    def check_input(self, ai: AbstractInput) -> bool:  # pragma: no cover - optional
        """Whether ``ai`` satisfies this problem (used by tests); sources that
        can express it override this."""
        raise NotImplementedError


#: Z3 resource units per millisecond of a solver budget (measured: hard
#: ACETest queries spend about 1-2 million units per second of solver time)
RLIMIT_PER_MS = 2000
#: the wall-clock backstop, as a multiple of the budget
WALL_FACTOR = 30


def limit(solver, ms: int) -> None:
    """Bound a Z3 solver (or optimiser) by a budget of ``ms`` milliseconds,
    counted in Z3's resource units rather than wall time: a query gives up
    at the same point however loaded the machine is, so results repeat for
    a seed. A wall-clock timeout of ``WALL_FACTOR`` times the budget stays
    as a backstop for work Z3 does not count."""
    solver.set("rlimit", int(ms * RLIMIT_PER_MS))
    solver.set("timeout", int(ms * WALL_FACTOR))


def model_int(model: z3.ModelRef, term: z3.ExprRef, default: int | None = None) -> int | None:
    """Integer value of ``term`` in ``model`` (bit-vectors read as signed 64-bit).
    Returns ``default`` when the model leaves the term open."""
    got = int_value(model.eval(term, model_completion=False))
    return default if got is None else got


def int_value(v: z3.ExprRef) -> int | None:
    """A z3 value as a Python int (bit-vectors signed, booleans 0/1), or None
    when ``v`` is not a value."""
    if z3.is_int_value(v):
        return v.as_long()
    if z3.is_bv_value(v):
        return v.as_signed_long()
    if z3.is_true(v):
        return 1
    if z3.is_false(v):
        return 0
    return None
