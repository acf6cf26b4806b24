"""Walking z3 terms: the variables and array reads below each assertion, and
the assertions connected to an argument variable.

The walk calls z3's C API directly, without the per-call error check of the
Python wrappers (it only reads well-formed terms), and shares one memo of AST
ids across the assertions of one context.
"""
from __future__ import annotations

from typing import Optional, Sequence

import z3


def _raw(fn):
    """The undecorated C function behind a z3core wrapper (no per-call error
    check: the traversal below only reads well-formed terms)."""
    defaults = getattr(fn, "__defaults__", None) or ()
    for d in defaults:
        f = getattr(d, "f", None)
        if f is not None:
            return f
    return None


_C = z3.z3core
_to_expr_ref = z3.z3._to_expr_ref
_GET_ID = _raw(_C.Z3_get_ast_id) or _C.Z3_get_ast_id
_GET_KIND = _raw(_C.Z3_get_ast_kind) or _C.Z3_get_ast_kind
_NUM_ARGS = _raw(_C.Z3_get_app_num_args) or _C.Z3_get_app_num_args
_GET_ARG = _raw(_C.Z3_get_app_arg) or _C.Z3_get_app_arg
_GET_DECL = _raw(_C.Z3_get_app_decl) or _C.Z3_get_app_decl
_DECL_KIND = _raw(_C.Z3_get_decl_kind) or _C.Z3_get_decl_kind


def _collect_one(a: z3.ExprRef, memo: dict, consts: dict, selects: list) -> frozenset:
    """Variables (names) below ``a``; fills ``consts`` (name -> const) and
    ``selects`` (select terms on variable arrays). ``memo`` maps AST ids to
    variable sets and is shared across calls on one context."""
    ctx = a.ctx
    cref = ctx.ref()
    app_kind = z3.Z3_APP_AST
    uninterp = z3.Z3_OP_UNINTERPRETED
    select_kind = z3.Z3_OP_SELECT

    def visit(ptr) -> frozenset:
        key = _GET_ID(cref, ptr)
        got = memo.get(key)
        if got is not None:
            return got
        if _GET_KIND(cref, ptr) != app_kind:
            memo[key] = frozenset()
            return memo[key]
        n = _NUM_ARGS(cref, ptr)
        dk = _DECL_KIND(cref, _GET_DECL(cref, ptr))
        if n == 0:
            if dk == uninterp:
                e = _to_expr_ref(ptr, ctx)
                name = e.decl().name()
                consts.setdefault(name, e)
                res = frozenset((name,))
            else:
                res = frozenset()
        else:
            acc: set = set()
            for i in range(n):
                acc |= visit(_GET_ARG(cref, ptr, i))
            res = frozenset(acc)
            if dk == select_kind:
                arr = _GET_ARG(cref, ptr, 0)
                if (_NUM_ARGS(cref, arr) == 0
                        and _DECL_KIND(cref, _GET_DECL(cref, arr)) == uninterp):
                    selects.append(_to_expr_ref(ptr, ctx))
        memo[key] = res
        return res

    return visit(a.as_ast())



def collect(assertions: Sequence[z3.ExprRef]):
    """Per assertion its variables (names); all variables (name -> const) and all
    ``select`` terms on variable arrays, in a deterministic order."""
    memo: dict = {}
    consts: dict[str, z3.ExprRef] = {}
    selects: list[z3.ExprRef] = []
    per_assertion = [_collect_one(a, memo, consts, selects) for a in assertions]
    return per_assertion, consts, selects


def keep_interesting(assertions: Sequence[z3.BoolRef], per: Optional[list] = None) -> list[z3.BoolRef]:
    """Assertions connected through shared variables to an argument variable
    (``per``: the variables of each assertion, when already known)."""
    if per is None:
        per, _, _ = collect(assertions)
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for vs in per:
        it = iter(vs)
        first = next(it, None)
        if first is None:
            continue
        r = find(first)
        for v in it:
            rv = find(v)
            if rv != r:
                parent[rv] = r
    good_roots = {find(v) for vs in per for v in vs if v.startswith("ARGNAME_")}
    return [a for a, vs in zip(assertions, per) if vs and find(next(iter(vs))) in good_roots]
