"""Make a drawn input satisfy a learned rule by editing the terms the rule
names, for constraint sources the rules cannot be compiled into (ACETest
constraint sets fill much of an input at random after solving, so a rule
relating two dims, a list item or a dtype is rarely met by redrawing alone).

``repair(expr, ai, rng)`` edits a copy of ``ai`` along the rule's structure:

- ``A == B`` / ``<=`` / ``>=`` / ``<`` / ``>``: the first assignable side
  (a list item ``l[i]``, ``len(l)``, ``x.dim[i]``, ``x.rank``, ``x.dtype``,
  ``x.value``, ``x[i]`` of a small tensor, a scalar argument) gets the value
  the other side has (moved by one for a strict comparison);
- ``A in (c, ...)``: ``A`` gets one of the constants;
- ``and``: every conjunct in turn; ``or``: a disjunct that can be made
  true, conditions last (``padding != 'VALID' or (X)`` repairs ``X``, not
  the attribute: the rule's substance is X); ``not flag``: the flag is cleared.

The result is only a proposal: the caller checks it with ``holds`` (a
repair can break another rule or an edit may be impossible), and the run
itself tells whether the API accepts it. The expression is interpreted with
``ast``; nothing is evaluated as Python.
"""
from __future__ import annotations

import ast
import copy
import dataclasses
import random
from typing import Any, Optional, Sequence

from ..model import AbstractInput, DTypeValue, TensorDesc
from .evaluate import _UNKNOWN, _Eval, _Unsupported, _const_index, _elements, _parse, holds

#: dims and list lengths a repair may set (larger values are left alone)
MAX_DIM = 64
MAX_RANK = 8
#: a value with one bound is drawn this far past it at most
SMALL = 4


class _Fail(Exception):
    pass


def _copy(v):
    # containers copied, everything else shared: TensorDesc is frozen and
    # the scalars are immutable (deepcopy was a third of a repair's cost)
    if isinstance(v, list):
        return [_copy(x) for x in v]
    if isinstance(v, dict):
        return {k: _copy(x) for k, x in v.items()}
    if isinstance(v, tuple):
        return tuple(_copy(x) for x in v)
    return v


def _copy_args(args: dict) -> dict:
    return {k: _copy(v) for k, v in args.items()}


def repair_all(rules: Sequence[str], ai: AbstractInput, rng: random.Random,
               rounds: int = 2) -> Optional[AbstractInput]:
    """A copy of ``ai`` edited to satisfy every rule of ``rules``, or None."""
    if all(holds(r, ai) for r in rules):
        return ai
    out = AbstractInput(ai.api, _copy_args(ai.args), ai.value_seed, list(ai.solved), dict(ai.origin))
    for _ in range(rounds):
        for r in rules:
            if not holds(r, out):
                try:
                    _Repair(out, rng).make_true(_parse(r))
                except (_Fail, _Unsupported, SyntaxError, TypeError, ValueError, IndexError):
                    pass
        if all(holds(r, out) for r in rules):
            return out
    return None


class _Repair:
    def __init__(self, ai: AbstractInput, rng: random.Random):
        self.ai = ai
        self.rng = rng

    def value(self, n: ast.AST) -> Any:
        return _Eval(self.ai).visit(n)

    def holds(self, n: ast.AST) -> bool:
        try:
            v = self.value(n)
        except (_Unsupported, TypeError):
            return True
        return True if v is _UNKNOWN else bool(v)

    # -- making a boolean node true ------------------------------------------------
    def make_true(self, n: ast.AST) -> None:
        if self.holds(n):
            return
        if isinstance(n, ast.BoolOp) and isinstance(n.op, ast.And):
            self.draw_values(n)
            for v in n.values:
                self.make_true(v)
            return
        if isinstance(n, ast.BoolOp):  # or: one disjunct; conditions (flags, enum tests) last
            options = list(n.values)
            self.rng.shuffle(options)
            options.sort(key=_is_condition)
            for v in options:
                saved = _copy_args(self.ai.args)
                try:
                    self.make_true(v)
                except (_Fail, _Unsupported, TypeError, ValueError, IndexError):
                    pass
                if self.holds(v):
                    return
                self.ai.args = saved
            raise _Fail("no disjunct")
        if isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.Not):
            self.make_false(n.operand)
            return
        if isinstance(n, ast.Name):
            self.assign(n, True)
            return
        if isinstance(n, ast.Compare) and len(n.ops) == 1:
            self.compare(n.left, n.ops[0], n.comparators[0])
            return
        if isinstance(n, ast.Compare):  # a chain: each link
            left = n.left
            for op, right in zip(n.ops, n.comparators):
                self.compare(left, op, right)
                left = right
            return
        raise _Fail(type(n).__name__)

    # -- values of small integer tensors, all at once ----------------------------------
    def draw_values(self, n: ast.AST) -> None:
        """Elements of small integer tensors that the conjunction ``n`` bounds
        (``lo <= p[i] < hi``, ``p[i] >= 0``, ``p[i] <= t.dim[i] - b[i]``) and
        keeps distinct (``p[i] != p[j]``, a permutation): when one of them breaks
        its bounds, they are drawn at random within them (distinct ones without
        replacement), instead of being set to a bound one at a time (which
        collides for a permutation and always picks the extreme value)."""
        lows: dict[tuple, int] = {}
        highs: dict[tuple, int] = {}
        distinct: dict[str, set] = {}
        broken: set[str] = set()
        for atom in self._atoms(n):
            links = list(zip([atom.left] + list(atom.comparators[:-1]), atom.ops, atom.comparators))
            for left, op, right in links:
                el, er = self._element_ref(left), self._element_ref(right)
                if el is not None and er is not None:
                    if isinstance(op, ast.NotEq) and el[0] == er[0]:
                        distinct.setdefault(el[0], set()).update((el[1], er[1]))
                        if not self.holds(ast.Compare(left=left, ops=[op], comparators=[right])):
                            broken.add(el[0])
                    continue
                if el is None and er is None:
                    continue
                ref, other, flip = (el, right, False) if el is not None else (er, left, True)
                assert ref is not None
                v = self.value(other)
                if not isinstance(v, int) or isinstance(v, bool):
                    continue
                kind = type(op).__name__
                if flip:
                    kind = {"Lt": "Gt", "LtE": "GtE", "Gt": "Lt", "GtE": "LtE"}.get(kind, kind)
                if kind in ("Lt", "LtE", "Eq"):
                    hi = v - 1 if kind == "Lt" else v
                    highs[ref] = min(highs.get(ref, hi), hi)
                if kind in ("Gt", "GtE", "Eq"):
                    lo = v + 1 if kind == "Gt" else v
                    lows[ref] = max(lows.get(ref, lo), lo)
                if kind in ("Lt", "LtE", "Gt", "GtE", "Eq") \
                        and not self.holds(ast.Compare(left=left, ops=[op], comparators=[right])):
                    broken.add(ref[0])
        refs = set(lows) | set(highs)
        for name in sorted(broken):
            t = self.ai.args.get(name)
            vals = _elements(t, self.ai.value_seed, name)
            if not isinstance(t, TensorDesc) or vals is None:
                continue
            new = list(vals)
            idx = sorted(i for i in distinct.get(name, ()) if i < len(new))
            if idx:
                dlo = max(lows.get((name, i), -MAX_DIM) for i in idx)
                dhi = min(highs.get((name, i), MAX_DIM) for i in idx)
                if dhi - dlo + 1 < len(idx):
                    continue
                for i, x in zip(idx, self.rng.sample(range(dlo, dhi + 1), len(idx))):
                    new[i] = x
            for (nm, i) in sorted(r for r in refs if r[0] == name and r[1] not in idx and r[1] < len(new)):
                blo, bhi = lows.get((nm, i)), highs.get((nm, i))
                cur = new[i]
                if blo is not None and bhi is not None:
                    if blo > bhi or blo <= cur <= bhi:
                        continue
                    new[i] = self.rng.randint(blo, bhi)
                elif blo is not None:
                    # one bound (paddings >= 0): a small value past it; a huge
                    # one (ACETest draws up to 1024) pads a tensor out of memory
                    if blo <= cur <= blo + MAX_DIM:
                        continue
                    new[i] = blo + self.rng.randint(0, SMALL)
                elif bhi is not None:
                    if bhi - MAX_DIM <= cur <= bhi:
                        continue
                    new[i] = bhi - self.rng.randint(0, SMALL)
            self.ai.args[name] = dataclasses.replace(t, values=tuple(int(x) for x in new))

    def _atoms(self, n: ast.AST):
        """The comparisons a conjunction requires: nested ``and``s flattened,
        ``guard or X`` (a length or dim compared with a constant) read as X
        while the guard does not hold."""
        if isinstance(n, ast.BoolOp) and isinstance(n.op, ast.And):
            for v in n.values:
                yield from self._atoms(v)
        elif isinstance(n, ast.BoolOp) and len(n.values) == 2:
            guards = [v for v in n.values if _is_guard(v)]
            if len(guards) == 1 and not self.holds(guards[0]):
                yield from self._atoms(next(v for v in n.values if v is not guards[0]))
        elif isinstance(n, ast.Compare) and not any(isinstance(o, (ast.In, ast.NotIn)) for o in n.ops):
            yield n

    def _element_ref(self, n: ast.AST) -> Optional[tuple]:
        """(tensor, flat index) when ``n`` is ``p[i]`` of a small integer tensor."""
        if not (isinstance(n, ast.Subscript) and isinstance(n.value, ast.Name)):
            return None
        t = self.ai.args.get(n.value.id)
        if not isinstance(t, TensorDesc) or not t.dtype.startswith(("int", "uint")):
            return None
        vals = _elements(t, self.ai.value_seed, n.value.id)
        try:
            i = _const_index(n.slice)
        except _Unsupported:
            return None
        if vals is None or not -len(vals) <= i < len(vals):
            return None
        return (n.value.id, i % len(vals))

    def make_false(self, n: ast.AST) -> None:
        if isinstance(n, ast.Name):
            self.assign(n, False)
            return
        if isinstance(n, ast.Compare) and len(n.ops) == 1:
            neg = {ast.Eq: ast.NotEq, ast.NotEq: ast.Eq, ast.Lt: ast.GtE, ast.GtE: ast.Lt,
                   ast.Gt: ast.LtE, ast.LtE: ast.Gt, ast.In: ast.NotIn, ast.NotIn: ast.In}
            op = neg.get(type(n.ops[0]))
            if op is not None:
                self.compare(n.left, op(), n.comparators[0])
                return
        raise _Fail("not")

    def compare(self, left: ast.expr, op: ast.cmpop, right: ast.expr) -> None:
        if isinstance(op, (ast.In, ast.NotIn)):
            if not isinstance(right, (ast.Tuple, ast.List, ast.Set)):
                raise _Fail("in")
            opts = [self.value(e) for e in right.elts]
            if isinstance(op, ast.In):
                self.assign(left, self.rng.choice(opts))
                return
            cur = self.value(left)
            if isinstance(cur, int) and not isinstance(cur, bool):
                self.assign(left, next(v for v in range(cur + 1, cur + 64) if v not in opts))
                return
            raise _Fail("not in")
        if isinstance(op, ast.NotEq):
            cur = self.value(right)
            if isinstance(cur, int) and not isinstance(cur, bool):
                self.assign(left, cur + 1)
                return
            if isinstance(cur, str) and self._options(left):
                others = [o for o in self._options(left) if o != cur]
                if others:
                    self.assign(left, self.rng.choice(others))
                    return
            raise _Fail("!=")
        if isinstance(op, ast.Eq) and isinstance(left, ast.BinOp) and isinstance(left.op, ast.Mod) \
                and self.value(right) == 0:
            self.make_divisible(left.left, left.right)
            return
        step = {ast.Eq: 0, ast.LtE: 0, ast.GtE: 0, ast.Lt: -1, ast.Gt: 1}.get(type(op))
        if step is None:
            raise _Fail("op")
        # assign the left side from the right one, else the right from the left
        for target, source, st in ((left, right, step), (right, left, -step)):
            v = self.value(source)
            if v is _UNKNOWN:
                continue
            try:
                self.assign(target, v + st if st else v)
            except (_Fail, _Unsupported):
                continue
            if self.holds(ast.Compare(left=left, ops=[op], comparators=[right])):
                return
        raise _Fail("compare")

    def make_divisible(self, total: ast.expr, by: ast.expr) -> None:
        """``total % by == 0`` for a sum ``total`` (a padded dim: a dim plus
        two paddings): one assignable term (an element or item first, then a
        dim) is raised by what the sum lacks to the next multiple."""
        m, x = self.value(by), self.value(total)
        if not isinstance(m, int) or not isinstance(x, int) or m <= 0:
            raise _Fail("divisor")
        need = (-x) % m
        terms = []
        stack = [total]
        while stack:
            t = stack.pop()
            if isinstance(t, ast.BinOp) and isinstance(t.op, ast.Add):
                stack += [t.right, t.left]
            else:
                terms.append(t)
        terms.sort(key=lambda t: 0 if isinstance(t, ast.Subscript) and isinstance(t.value, ast.Name) else 1)
        for t in terms:
            v = self.value(t)
            if not isinstance(v, int) or isinstance(v, bool):
                continue
            saved = _copy_args(self.ai.args)
            try:
                self.assign(t, v + need)
            except (_Fail, _Unsupported, IndexError):
                self.ai.args = saved
                continue
            if self.value(total) % m == 0:
                return
            self.ai.args = saved
        raise _Fail("divisible")

    def _options(self, n: ast.AST) -> list:
        return []  # enum alternatives are not known here (the spec is not at hand)

    # -- assigning a term ---------------------------------------------------------------
    def assign(self, n: ast.AST, v: Any) -> None:
        args = self.ai.args
        if isinstance(n, ast.Name):
            cur = args.get(n.id, _UNKNOWN)
            if isinstance(cur, DTypeValue) and isinstance(v, str):
                args[n.id] = DTypeValue(v)
            elif isinstance(cur, bool) and isinstance(v, bool):
                args[n.id] = v
            elif isinstance(cur, int) and not isinstance(cur, bool) and isinstance(v, int):
                args[n.id] = int(v)
            elif isinstance(cur, float) and isinstance(v, (int, float)):
                args[n.id] = float(v)
            elif isinstance(cur, str) and isinstance(v, str):
                args[n.id] = v
            else:
                raise _Fail("name")
            return
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "len" \
                and len(n.args) == 1 and isinstance(n.args[0], ast.Name):
            name = n.args[0].id
            cur = args.get(name)
            if not isinstance(cur, list) or not isinstance(v, int) or not 0 <= v <= MAX_RANK:
                raise _Fail("len")
            if len(cur) > v:
                args[name] = cur[:v]
            else:
                fill = cur[-1] if cur else 1
                args[name] = cur + [copy.deepcopy(fill) for _ in range(v - len(cur))]
            return
        if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name):
            name, attr = n.value.id, n.attr
            if attr == "rank":
                if not isinstance(v, int) or not 0 <= v <= MAX_RANK:
                    raise _Fail("rank")
                self._tensors(name, lambda t: _reshape(t, _resized(t.shape, v)))
                return
            if attr == "dtype" and isinstance(v, str):
                self._tensors(name, lambda t: dataclasses.replace(t, dtype=v))
                return
            if attr == "value":
                self._element(name, 0, v, single=True)
                return
            raise _Fail(attr)
        if isinstance(n, ast.Subscript):
            idx = _const_index(n.slice)
            if isinstance(n.value, ast.Attribute) and isinstance(n.value.value, ast.Name) \
                    and n.value.attr in ("dim", "shape"):
                if not isinstance(v, int) or not 0 <= v <= MAX_DIM:
                    raise _Fail("dim")

                def set_dim(t: TensorDesc) -> TensorDesc:
                    r = t.rank
                    i = idx if idx >= 0 else r + idx
                    if not 0 <= i < r:
                        raise _Fail("dim index")
                    shape = list(t.shape)
                    shape[i] = v
                    return _reshape(t, tuple(shape))

                self._tensors(n.value.value.id, set_dim)
                return
            if isinstance(n.value, ast.Name):
                name = n.value.id
                cur = args.get(name)
                if isinstance(cur, TensorDesc):
                    self._element(name, idx, v)
                    return
                if isinstance(cur, list) and -len(cur) <= idx < len(cur) \
                        and isinstance(cur[idx], (int, float)) and not isinstance(cur[idx], bool) \
                        and isinstance(v, (int, float)):
                    cur[idx] = type(cur[idx])(v)
                    return
            raise _Fail("subscript")
        raise _Fail(type(n).__name__)

    def _tensors(self, name: str, fn) -> None:
        cur = self.ai.args.get(name)
        if isinstance(cur, TensorDesc):
            self.ai.args[name] = fn(cur)
        elif isinstance(cur, list) and cur and all(isinstance(t, TensorDesc) for t in cur):
            self.ai.args[name] = [fn(t) for t in cur]
        else:
            raise _Fail("tensor")

    def _element(self, name: str, idx: int, v: Any, single: bool = False) -> None:
        t = self.ai.args.get(name)
        vals = _elements(t, self.ai.value_seed, name)
        if not isinstance(t, TensorDesc) or vals is None or (single and len(vals) != 1) \
                or not -len(vals) <= idx < len(vals) or not isinstance(v, (int, float)):
            raise _Fail("element")
        new = list(vals)
        new[idx] = int(v) if t.dtype.startswith(("int", "uint")) else float(v)
        self.ai.args[name] = dataclasses.replace(t, values=tuple(new))


def _is_guard(n: ast.AST) -> bool:
    """``p.dim[k] <= c`` / ``len(l) <= c`` (or ``<``): a length guard of a
    rule on the elements past it (``@permutation``)."""
    if not (isinstance(n, ast.Compare) and len(n.ops) == 1 and isinstance(n.ops[0], (ast.LtE, ast.Lt))):
        return False
    left, right = n.left, n.comparators[0]
    if not (isinstance(right, ast.Constant) and isinstance(right.value, int)):
        return False
    if isinstance(left, ast.Call):
        return isinstance(left.func, ast.Name) and left.func.id == "len"
    return isinstance(left, ast.Subscript) and isinstance(left.value, ast.Attribute) \
        and left.value.attr in ("dim", "shape")


def _is_condition(n: ast.AST) -> bool:
    """A flag, a negated flag, a comparison of an argument with a string, or
    a length guard (repaired last: the rule's substance is the other side)."""
    if isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.Not):
        n = n.operand
    if isinstance(n, ast.Name) or _is_guard(n):
        return True
    return (isinstance(n, ast.Compare) and len(n.ops) == 1 and isinstance(n.left, ast.Name)
            and isinstance(n.comparators[0], ast.Constant) and isinstance(n.comparators[0].value, str))


def _resized(shape: tuple, rank: int) -> tuple:
    return tuple(shape[:rank]) if len(shape) >= rank else tuple(shape) + (1,) * (rank - len(shape))


def _reshape(t: TensorDesc, shape: tuple) -> TensorDesc:
    values = t.values
    if values is not None:
        n = 1
        for d in shape:
            n *= int(d)
        values = tuple((list(values) or [0]) * (n // max(len(values), 1) + 1))[:n]
    return dataclasses.replace(t, shape=tuple(int(d) for d in shape), values=values)
