"""Evaluate a rule expression (the language of ``acetest_ml.solve.rules``) on
one concrete AbstractInput.

The learner needs this to check a candidate rule against every recorded run
(does each passing run satisfy it? does the failing run violate it?) and to
enforce rules where they cannot be compiled into the solver (ACETest
constraint sets fill much of an input at random after solving). The
expression is parsed with ``ast`` and interpreted node by node; nothing is
evaluated as Python.

Semantics follow the registry compiler: ``x.dim[i]`` past the rank is 1 (a
negative index past the rank is -1), ``x[i]`` past a list's end is 0, a
tensor list's ``rank``/``dim`` are those of its items. What cannot be read
from the input (an absent optional argument, an empty tensor list) is
*unknown*; a rule whose value is unknown counts as satisfied.
"""
from __future__ import annotations

import ast
import functools
import operator
from typing import Any, Optional

from ..model import AbstractInput, DTypeValue, TensorDesc

_UNKNOWN = None

_BIN = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
        ast.FloorDiv: lambda a, b: a // b if b else _UNKNOWN,
        ast.Mod: lambda a, b: a % b if b else _UNKNOWN}
_CMP = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
        ast.Gt: operator.gt, ast.GtE: operator.ge}


@functools.lru_cache(maxsize=4096)
def _parse(expr: str) -> ast.AST:
    return ast.parse(expr, mode="eval").body


def holds(expr: str, ai: AbstractInput) -> bool:
    """Whether ``ai`` satisfies ``expr`` (unknown counts as satisfied)."""
    try:
        v = _Eval(ai).visit(_parse(expr))
    except (SyntaxError, _Unsupported, TypeError):
        return True
    return True if v is _UNKNOWN else bool(v)


def value_of(expr: str, ai: AbstractInput) -> Any:
    """The value of a term (``x.rank``, ``len(l)``...) on ``ai``, or None."""
    try:
        return _Eval(ai).visit(_parse(expr))
    except (SyntaxError, _Unsupported, TypeError):
        return None


#: tensors up to this many elements have their elements read (``x.value``, ``x[i]``)
MAX_ELEMENTS = 16


def _elements(v: Any, seed: int, name: str) -> Optional[tuple]:
    """The elements of a small numeric tensor: its explicit values, else the
    ones the materialiser derives from the value seed."""
    if not isinstance(v, TensorDesc) or v.numel > MAX_ELEMENTS or v.dtype in ("string", "bool") \
            or v.dtype.startswith("complex"):
        return None
    if v.values is not None:
        return tuple(v.values)
    try:
        return _derived(v, seed, name)
    except TypeError:  # an unhashable field (never made by the sampler)
        return _derived.__wrapped__(v, seed, name)


@functools.lru_cache(maxsize=65536)
def _derived(v: TensorDesc, seed: int, name: str) -> tuple:
    # the learner re-reads the same runs at every mining round: derive once
    from ..materialize import arg_seed, generate_array
    arr = generate_array(v.dtype, v.shape, v.low, v.high, None, arg_seed(seed, name))
    return tuple(x.item() for x in arr.reshape(-1))


class _Unsupported(Exception):
    pass


def _tensor(v: Any) -> Optional[TensorDesc]:
    if isinstance(v, TensorDesc):
        return v
    if isinstance(v, list) and v and isinstance(v[0], TensorDesc):
        return v[0]
    return None


class _Eval:
    def __init__(self, ai: AbstractInput):
        self.args = ai.args
        self.seed = ai.value_seed

    def visit(self, n: ast.AST):
        fn = getattr(self, "v_" + type(n).__name__, None)
        if fn is None:
            raise _Unsupported(type(n).__name__)
        return fn(n)

    def v_Constant(self, n):
        return n.value

    def v_Name(self, n):
        v = self.args.get(n.id, _UNKNOWN)
        if isinstance(v, DTypeValue):
            return v.name
        if isinstance(v, (TensorDesc, list)):
            return _UNKNOWN
        return v

    def v_Attribute(self, n):
        if not isinstance(n.value, ast.Name):
            raise _Unsupported("attribute")
        arg, attr = n.value.id, n.attr
        if attr == "present":
            return arg in self.args
        if attr == "value":
            vals = _elements(self.args.get(arg), self.seed, arg)
            return vals[0] if vals is not None and len(vals) == 1 else _UNKNOWN
        t = _tensor(self.args.get(arg))
        if attr == "rank":
            return _UNKNOWN if t is None else t.rank
        if attr == "dtype":
            return _UNKNOWN if t is None else t.dtype
        if attr in ("dim", "shape"):
            return ("dims", t)
        if attr in ("low", "high"):  # the fill range of a float tensor
            end = None if t is None else (t.low if attr == "low" else t.high)
            return _UNKNOWN if end is None else end
        raise _Unsupported(attr)

    def v_Subscript(self, n):
        idx = _const_index(n.slice)
        if isinstance(n.value, ast.Attribute):
            base = self.visit(n.value)
            if isinstance(base, tuple) and base[0] == "dims":
                t = base[1]
                if t is None:
                    return _UNKNOWN
                r = t.rank
                if idx >= 0:
                    return int(t.shape[idx]) if idx < r else 1
                return int(t.shape[r + idx]) if r + idx >= 0 else -1
            raise _Unsupported("subscript")
        if isinstance(n.value, ast.Name):
            v = self.args.get(n.value.id, _UNKNOWN)
            if isinstance(v, TensorDesc):
                vals = _elements(v, self.seed, n.value.id)
                return vals[idx] if vals is not None and -len(vals) <= idx < len(vals) else _UNKNOWN
            if not isinstance(v, list):
                return _UNKNOWN
            if idx < 0:
                idx += len(v)
                if idx < 0:
                    return 0
            if idx >= len(v):
                return 0
            x = v[idx]
            return x if isinstance(x, (int, float, bool)) else _UNKNOWN
        raise _Unsupported("subscript")

    def v_Call(self, n):
        if isinstance(n.func, ast.Name) and n.func.id == "len" and len(n.args) == 1 \
                and isinstance(n.args[0], ast.Name):
            v = self.args.get(n.args[0].id, _UNKNOWN)
            return len(v) if isinstance(v, list) else _UNKNOWN
        raise _Unsupported("call")

    def v_BinOp(self, n):
        op = _BIN.get(type(n.op))
        if op is None:
            raise _Unsupported("binop")
        a, b = self.visit(n.left), self.visit(n.right)
        if a is _UNKNOWN or b is _UNKNOWN:
            return _UNKNOWN
        return op(a, b)

    def v_UnaryOp(self, n):
        v = self.visit(n.operand)
        if v is _UNKNOWN:
            return _UNKNOWN
        if isinstance(n.op, ast.Not):
            return not v
        if isinstance(n.op, ast.USub):
            return -v
        raise _Unsupported("unary")

    def v_BoolOp(self, n):
        vals = [self.visit(v) for v in n.values]
        known = [bool(v) for v in vals if v is not _UNKNOWN]
        if isinstance(n.op, ast.And):
            if not all(known):
                return False
            return _UNKNOWN if len(known) < len(vals) else True
        if any(known):
            return True
        return _UNKNOWN if len(known) < len(vals) else False

    def v_Compare(self, n):
        out = True
        left = self.visit(n.left)
        for op, right_node in zip(n.ops, n.comparators):
            if isinstance(op, (ast.In, ast.NotIn)):
                if not isinstance(right_node, (ast.Tuple, ast.List, ast.Set)):
                    raise _Unsupported("in")
                opts = [self.visit(e) for e in right_node.elts]
                if left is _UNKNOWN:
                    return _UNKNOWN
                r = left in opts
                ok = (not r) if isinstance(op, ast.NotIn) else r
                right = _UNKNOWN
            else:
                right = self.visit(right_node)
                if left is _UNKNOWN or right is _UNKNOWN:
                    return _UNKNOWN
                ok = _CMP[type(op)](left, right)
            out = out and ok
            left = right
        return out


def _const_index(node) -> int:
    if isinstance(node, ast.Constant) and isinstance(node.value, int):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) \
            and isinstance(node.operand, ast.Constant) \
            and isinstance(node.operand.value, int):
        return -node.operand.value
    raise _Unsupported("index")
