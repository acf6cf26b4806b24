"""Check a concrete assignment against Z3 formulas without Z3.

The cheap sampler (``sampler.Sampler(cheap=True)``) mutates solved models in
Python and must know whether the mutated assignment still satisfies the
problem. Calling Z3 for that would cost as much as solving, so the formulas
are compiled once into Python closures: the Z3 expression tree is walked
node by node (And / Or / Not / Implies / Xor / == / Distinct / comparisons /
+ - * / unary minus / If / div / mod / rem over Int and Bool constants) and
each node becomes a closure over the closures of its children. Nothing is
turned into source text or evaluated as Python.

An assignment is a dict {variable name: int or bool}. A formula whose value
is undefined on it (division by zero, a variable the dict lacks) counts as
broken, so the checker errs on the side of asking Z3.
"""
from __future__ import annotations

from typing import Callable, Iterable, Mapping, Sequence

import z3

Env = Mapping[str, int]
Fn = Callable[[Env], object]


class Unsupported(Exception):
    """The formula uses a term the checker cannot evaluate."""


class _Undefined(Exception):
    pass


def _div(a: int, b: int) -> int:
    """SMT-LIB integer division: a = b*q + r with 0 <= r < |b|."""
    if b == 0:
        raise _Undefined()
    r = a % abs(b)
    return (a - r) // b


def _mod(a: int, b: int) -> int:
    if b == 0:
        raise _Undefined()
    return a % abs(b)


def _rem(a: int, b: int) -> int:
    m = _mod(a, b)
    return m if b >= 0 else -m


class _Compiler:
    def __init__(self) -> None:
        self.memo: dict[int, Fn] = {}
        self.vars: dict[int, set[str]] = {}

    def compile(self, e: z3.ExprRef) -> Fn:
        key = e.get_id()
        fn = self.memo.get(key)
        if fn is None:
            fn, names = self._node(e)
            self.memo[key] = fn
            self.vars[key] = names
        return fn

    def names(self, e: z3.ExprRef) -> set[str]:
        self.compile(e)
        return self.vars[e.get_id()]

    def _node(self, e: z3.ExprRef) -> tuple[Fn, set[str]]:
        if z3.is_int_value(e):
            c = e.as_long()
            return (lambda env: c), set()
        if z3.is_true(e):
            return (lambda env: True), set()
        if z3.is_false(e):
            return (lambda env: False), set()
        if not z3.is_app(e):
            raise Unsupported(f"not an application: {e}")
        decl = e.decl()
        k = decl.kind()
        if k == z3.Z3_OP_UNINTERPRETED:
            if e.num_args() != 0 or not (z3.is_int(e) or z3.is_bool(e)):
                raise Unsupported(f"not an Int or Bool constant: {e}")
            name = decl.name()

            def var(env, name=name):
                return env[name]
            return var, {name}
        kids = [e.arg(i) for i in range(e.num_args())]
        fns = [self.compile(c) for c in kids]
        names: set[str] = set()
        for c in kids:
            names |= self.vars[c.get_id()]
        maker = _OPS.get(k)
        if maker is None:
            raise Unsupported(f"operator {decl.name()} ({e.sexpr()[:60]})")
        return maker(fns, kids), names


def _and(fns, kids) -> Fn:
    fs = tuple(fns)

    def f(env):
        for g in fs:
            if not g(env):
                return False
        return True
    return f


def _or(fns, kids) -> Fn:
    fs = tuple(fns)

    def f(env):
        for g in fs:
            if g(env):
                return True
        return False
    return f


def _not(fns, kids) -> Fn:
    g = fns[0]
    return lambda env: not g(env)


def _implies(fns, kids) -> Fn:
    a, b = fns
    return lambda env: (not a(env)) or bool(b(env))


def _xor(fns, kids) -> Fn:
    a, b = fns
    return lambda env: bool(a(env)) != bool(b(env))


def _const_side(kid) -> tuple[bool, object]:
    if z3.is_int_value(kid):
        return True, kid.as_long()
    return False, None


def _cmp(op) -> Callable:
    def make(fns, kids) -> Fn:
        a, b = fns
        if len(kids) == 2:
            # var <op> constant: the common bound atom, one call fewer
            is_c, c = _const_side(kids[1])
            if is_c and z3.is_const(kids[0]) and kids[0].decl().kind() == z3.Z3_OP_UNINTERPRETED:
                name = kids[0].decl().name()
                return lambda env: op(env[name], c)
        return lambda env: op(a(env), b(env))
    return make


def _eq(fns, kids) -> Fn:
    a, b = fns
    if z3.is_bool(kids[0]):
        return lambda env: bool(a(env)) == bool(b(env))
    return _cmp(lambda x, y: x == y)(fns, kids)


def _distinct(fns, kids) -> Fn:
    fs = tuple(fns)
    bools = z3.is_bool(kids[0])

    def f(env):
        vals = [bool(g(env)) if bools else g(env) for g in fs]
        return len(set(vals)) == len(vals)
    return f


def _add(fns, kids) -> Fn:
    fs = tuple(fns)
    if len(fs) == 2:
        a, b = fs
        return lambda env: a(env) + b(env)

    def f(env):
        s = 0
        for g in fs:
            s += g(env)
        return s
    return f


def _sub(fns, kids) -> Fn:
    first, rest = fns[0], tuple(fns[1:])

    def f(env):
        s = first(env)
        for g in rest:
            s -= g(env)
        return s
    return f


def _mul(fns, kids) -> Fn:
    fs = tuple(fns)

    def f(env):
        p = 1
        for g in fs:
            p *= g(env)
        return p
    return f


def _uminus(fns, kids) -> Fn:
    g = fns[0]
    return lambda env: -g(env)


def _binary(op) -> Callable:
    def make(fns, kids) -> Fn:
        a, b = fns
        return lambda env: op(a(env), b(env))
    return make


def _ite(fns, kids) -> Fn:
    c, a, b = fns
    return lambda env: a(env) if c(env) else b(env)


def _to_int(fns, kids) -> Fn:
    # integers only: to_real / to_int of an integer term is the term itself
    if not all(z3.is_int(k) for k in kids):
        raise Unsupported("real-valued term")
    return fns[0]


_OPS: dict[int, Callable] = {
    z3.Z3_OP_AND: _and,
    z3.Z3_OP_OR: _or,
    z3.Z3_OP_NOT: _not,
    z3.Z3_OP_IMPLIES: _implies,
    z3.Z3_OP_XOR: _xor,
    z3.Z3_OP_EQ: _eq,
    z3.Z3_OP_IFF: _eq,
    z3.Z3_OP_DISTINCT: _distinct,
    z3.Z3_OP_LE: _cmp(lambda x, y: x <= y),
    z3.Z3_OP_LT: _cmp(lambda x, y: x < y),
    z3.Z3_OP_GE: _cmp(lambda x, y: x >= y),
    z3.Z3_OP_GT: _cmp(lambda x, y: x > y),
    z3.Z3_OP_ADD: _add,
    z3.Z3_OP_SUB: _sub,
    z3.Z3_OP_MUL: _mul,
    z3.Z3_OP_UMINUS: _uminus,
    z3.Z3_OP_IDIV: _binary(_div),
    z3.Z3_OP_MOD: _binary(_mod),
    z3.Z3_OP_REM: _binary(_rem),
    z3.Z3_OP_ITE: _ite,
    z3.Z3_OP_TO_INT: _to_int,
}


#: compiled formulas of this process by their text (see Checker)
_COMPILED: dict[str, tuple[Fn, frozenset]] = {}
_COMPILED_MAX = 50000


class Checker:
    """The conjunction of ``formulas`` as Python closures.

    ``check(env)`` tells whether every formula holds; ``check(env, changed)``
    evaluates only the formulas that mention a variable in ``changed`` (the
    caller knows the rest held before the change). Raises Unsupported at
    construction when a formula uses a term it cannot evaluate."""

    def __init__(self, formulas: Sequence[z3.BoolRef]):
        comp = _Compiler()
        self.fns: list[Fn] = []
        self.by_var: dict[str, list[int]] = {}
        for i, f in enumerate(formulas):
            # a formula's closure depends on its text only (variable names and
            # constants), not on its Z3 context: a learned rule set's problem
            # repeats the API's own formulas in a new context, compiled once
            key = f.sexpr()
            hit = _COMPILED.get(key)
            if hit is None:
                fn = comp.compile(f)
                hit = (fn, frozenset(comp.names(f)))
                if len(_COMPILED) >= _COMPILED_MAX:
                    _COMPILED.clear()
                _COMPILED[key] = hit
            self.fns.append(hit[0])
            for name in hit[1]:
                self.by_var.setdefault(name, []).append(i)
        self.names = set(self.by_var)

    def _holds(self, fn: Fn, env: Env) -> bool:
        try:
            return bool(fn(env))
        except (_Undefined, KeyError):
            return False

    def check(self, env: Env, changed: Iterable[str] | None = None) -> bool:
        if changed is None:
            idx: Iterable[int] = range(len(self.fns))
        else:
            s: set[int] = set()
            for name in changed:
                s.update(self.by_var.get(name, ()))
            idx = s
        fns = self.fns
        for i in idx:
            if not self._holds(fns[i], env):
                return False
        return True

    def failing(self, env: Env) -> list[int]:
        """Indices of the formulas ``env`` breaks (for tests and reports)."""
        return [i for i, fn in enumerate(self.fns) if not self._holds(fn, env)]
