"""Per-API extra rules written in YAML, compiled to Z3 formulas.

A rules file maps API names to lists of expressions over argument properties::

    rules:
      tf.raw_ops.Conv2D:
        - input.rank == 4
        - len(strides) == 4
        - input.dim[-1] == filter.dim[2]

Expressions are parsed with ``ast`` into a syntax tree and translated node by
node into Z3 terms; nothing is ever evaluated as Python. Supported terms:
``x.rank``, ``x.dim[i]`` / ``x.shape[i]`` (constant ``i``, negative counts from
the end), ``len(x)``, ``x[i]`` (list item; for a tensor: its i-th element, of
the first few), ``x.value`` (the element of a one-element tensor, e.g. a 0-d
int tensor), ``x.low`` / ``x.high`` (the range a float tensor's elements are
drawn from, compared with a number: ``input.low >= 0 and input.high <= 1``),
``x`` (int / bool / enum value;
compare an enum or dtype with a string constant), ``x.dtype``, ``x.present``,
integer constants, ``+ - * // %``, comparisons (chained), ``and or not`` and
``in (a, b, ...)``.
"""
from __future__ import annotations

import ast
import os
from typing import Any, Callable

import yaml
import z3

from ..errors import ConfigError


class RuleError(ConfigError):
    pass


def load_rules_file(path: str) -> dict[str, list[str]]:
    """Read a rules YAML file -> {api: [expression, ...]}; ConfigError on problems."""
    if not os.path.exists(path):
        raise ConfigError(f"{path}: rules file not found")
    try:
        with open(path) as f:
            doc = yaml.safe_load(f)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}:{where} invalid YAML ({getattr(e, 'problem', e)})") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict) or not isinstance(doc.get("rules", {}), dict):
        raise ConfigError(f"{path}: key 'rules' must map API names to lists of expressions")
    unknown = set(doc) - {"rules"}
    if unknown:
        raise ConfigError(f"{path}: unknown top-level key {sorted(unknown)[0]!r} (expected 'rules')")
    out: dict[str, list[str]] = {}
    for api, exprs in (doc.get("rules") or {}).items():
        if not isinstance(exprs, list) or not all(isinstance(x, str) for x in exprs):
            raise ConfigError(f"{path}: rules.{api} must be a list of expression strings")
        for expr in exprs:
            try:
                ast.parse(expr, mode="eval")
            except SyntaxError as err:
                raise ConfigError(f"{path}: rules.{api}: cannot parse {expr!r} ({err.msg})") from None
        out[api] = list(exprs)
    return out


class Terms:
    """What a rule may refer to; implemented by the problem that owns the vars
    (``ctx`` is its Z3 context)."""

    ctx: z3.Context

    def rank(self, arg: str) -> z3.ArithRef: ...
    def dim(self, arg: str, index: int) -> z3.ArithRef: ...
    def length(self, arg: str) -> z3.ArithRef: ...
    def item(self, arg: str, index: int) -> z3.ArithRef: ...
    def tensor_value(self, arg: str, index: int) -> z3.ArithRef: ...
    def value(self, arg: str) -> z3.ExprRef: ...
    def enum_code(self, arg: str, literal: Any) -> z3.ArithRef | None: ...
    def dtype(self, arg: str) -> z3.ArithRef: ...
    def dtype_code(self, arg: str, name: str) -> int | None: ...
    def present(self, arg: str) -> z3.BoolRef: ...
    def fill_range(self, arg: str, end: str, cmp: Callable, c: float) -> z3.BoolRef: ...


def compile_rule(expr: str, terms: Terms, where: str = "rule") -> z3.BoolRef:
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError as e:
        raise RuleError(f"{where}: cannot parse {expr!r} ({e.msg})") from None
    try:
        out = _Compiler(terms).visit(tree.body)
    except RuleError as e:
        raise RuleError(f"{where}: {expr!r}: {e}") from None
    except KeyError as e:
        raise RuleError(f"{where}: {expr!r}: unknown argument {e.args[0]!r}") from None
    if not z3.is_bool(out):
        raise RuleError(f"{where}: {expr!r} is not a condition")
    return out


_BINOPS: dict[type, Callable] = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.FloorDiv: lambda a, b: a / b,
    ast.Mod: lambda a, b: a % b,
}
_CMPS: dict[type, Callable] = {
    ast.Eq: lambda a, b: a == b,
    ast.NotEq: lambda a, b: a != b,
    ast.Lt: lambda a, b: a < b,
    ast.LtE: lambda a, b: a <= b,
    ast.Gt: lambda a, b: a > b,
    ast.GtE: lambda a, b: a >= b,
}


class _Compiler:
    def __init__(self, terms: Terms):
        self.t = terms
        self.ctx = terms.ctx

    def visit(self, node: ast.AST):
        fn = getattr(self, "v_" + type(node).__name__, None)
        if fn is None:
            raise RuleError(f"unsupported syntax {type(node).__name__}")
        return fn(node)

    # leaves -----------------------------------------------------------------
    def v_Constant(self, n: ast.Constant):
        if isinstance(n.value, bool):
            return z3.BoolVal(n.value, self.ctx)
        if isinstance(n.value, int):
            return z3.IntVal(n.value, self.ctx)
        if isinstance(n.value, str):
            return n.value  # resolved against the other side of a comparison
        raise RuleError(f"unsupported constant {n.value!r}")

    def v_Name(self, n: ast.Name):
        return self.t.value(n.id)

    def v_Attribute(self, n: ast.Attribute):
        if not isinstance(n.value, ast.Name):
            raise RuleError("attributes apply to argument names only")
        arg = n.value.id
        if n.attr == "rank":
            return self.t.rank(arg)
        if n.attr == "present":
            return self.t.present(arg)
        if n.attr == "value":
            return self.t.tensor_value(arg, 0)
        if n.attr == "dtype":
            return ("dtype", arg)
        if n.attr in ("dim", "shape"):
            return ("dims", arg)
        if n.attr in ("low", "high"):
            return ("range", arg, n.attr)
        raise RuleError(f"unknown property .{n.attr}")

    def v_Subscript(self, n: ast.Subscript):
        idx = _const_int(n.slice)
        base = self.visit(n.value) if isinstance(n.value, ast.Attribute) else None
        if isinstance(base, tuple) and base[0] == "dims":
            return self.t.dim(base[1], idx)
        if isinstance(n.value, ast.Name):
            return self.t.item(n.value.id, idx)
        raise RuleError("subscripts apply to x.dim[...] or list arguments")

    def v_Call(self, n: ast.Call):
        if isinstance(n.func, ast.Name) and n.func.id == "len" and len(n.args) == 1 \
                and isinstance(n.args[0], ast.Name):
            return self.t.length(n.args[0].id)
        raise RuleError("the only call allowed is len(arg)")

    # operators --------------------------------------------------------------
    def v_BinOp(self, n: ast.BinOp):
        op = _BINOPS.get(type(n.op))
        if op is None:
            raise RuleError(f"unsupported operator {type(n.op).__name__}")
        return op(self._arith(n.left), self._arith(n.right))

    def v_UnaryOp(self, n: ast.UnaryOp):
        if isinstance(n.op, ast.Not):
            return z3.Not(self._bool(n.operand))
        if isinstance(n.op, ast.USub):
            return -self._arith(n.operand)
        raise RuleError(f"unsupported operator {type(n.op).__name__}")

    def v_BoolOp(self, n: ast.BoolOp):
        parts = [self._bool(v) for v in n.values]
        return z3.And(*parts) if isinstance(n.op, ast.And) else z3.Or(*parts)

    def v_Compare(self, n: ast.Compare):
        out = []
        left_node = n.left
        for op, right_node in zip(n.ops, n.comparators):
            if isinstance(op, (ast.In, ast.NotIn)):
                if not isinstance(right_node, (ast.Tuple, ast.List, ast.Set)):
                    raise RuleError("'in' needs a literal tuple or list")
                opts = [self._pair(left_node, e, _CMPS[ast.Eq]) for e in right_node.elts]
                cond = z3.Or(*opts) if opts else z3.BoolVal(False, self.ctx)
                out.append(z3.Not(cond) if isinstance(op, ast.NotIn) else cond)
            else:
                fn = _CMPS.get(type(op))
                if fn is None:
                    raise RuleError(f"unsupported comparison {type(op).__name__}")
                out.append(self._pair(left_node, right_node, fn))
            left_node = right_node
        return out[0] if len(out) == 1 else z3.And(*out)

    def _pair(self, left_node, right_node, fn):
        a, b = self.visit(left_node), self.visit(right_node)
        if _is_range(a) or _is_range(b):
            # x.low / x.high (a float tensor's fill range) against a number
            if _is_range(b):
                a, b, left_node, right_node = b, a, right_node, left_node
                fn = _FLIPPED[fn]
            c = _const_number(right_node)
            if c is None:
                raise RuleError(f"{a[1]}.{a[2]} compares with a number only")
            return self.t.fill_range(a[1], a[2], fn, c)
        a, b = self._resolve_literal(a, b, left_node), self._resolve_literal(b, a, right_node)
        return fn(a, b)

    def _resolve_literal(self, x, other, node):
        """A string literal compared with an enum/dtype becomes its code."""
        if isinstance(x, tuple) and x[0] == "dtype":
            return self.t.dtype(x[1])
        if not isinstance(x, str):
            return x
        if isinstance(other, tuple) and other[0] == "dtype":
            code = self.t.dtype_code(other[1], x)
        else:
            argname = _arg_of(other)
            code = self.t.enum_code(argname, x) if argname else None
        if code is None:
            raise RuleError(f"string {x!r} is not an allowed value of the other side")
        return z3.IntVal(code, self.ctx) if not isinstance(code, z3.ExprRef) else code

    def _arith(self, node):
        v = self.visit(node)
        if isinstance(v, (str, tuple)) or z3.is_bool(v):
            raise RuleError("expected a number")
        return v

    def _bool(self, node):
        v = self.visit(node)
        if not z3.is_bool(v):
            raise RuleError("expected a condition")
        return v


def _is_range(x) -> bool:
    return isinstance(x, tuple) and len(x) == 3 and x[0] == "range"


#: a comparison with its sides swapped (``c < x.low`` is ``x.low > c``)
_FLIPPED: dict[Callable, Callable] = {
    _CMPS[ast.Eq]: _CMPS[ast.Eq], _CMPS[ast.NotEq]: _CMPS[ast.NotEq],
    _CMPS[ast.Lt]: _CMPS[ast.Gt], _CMPS[ast.Gt]: _CMPS[ast.Lt],
    _CMPS[ast.LtE]: _CMPS[ast.GtE], _CMPS[ast.GtE]: _CMPS[ast.LtE],
}


def _const_number(node) -> float | None:
    """An int or float literal (optionally negated), else None."""
    neg = isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub)
    if neg:
        node = node.operand
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) \
            and not isinstance(node.value, bool):
        return -node.value if neg else node.value
    return None


def _arg_of(x) -> str | None:
    if isinstance(x, z3.ExprRef) and z3.is_const(x):
        name = x.decl().name()
        return name[:-4] if name.endswith(".val") else None
    return None


def _const_int(node) -> int:
    if isinstance(node, ast.Constant) and isinstance(node.value, int):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant):
        if isinstance(node.operand.value, int):
            return -node.operand.value
    raise RuleError("indices must be integer constants")
