"""Rules mined from labelled runs (inductive, in the spirit of NeuRI).

Candidate predicates are enumerated over the shape abstraction of the spec
(tensor ranks, leading and trailing dimensions, list lengths, int values):

- ``t.rank == r``, ``t.rank >= lo``, ``t.rank <= hi``
- ``t.rank == u.rank``, ``t.rank == u.rank + 1``, equal shapes;
  ``t.dim[i] == u.dim[j]`` for i, j in 0, 1, -1, -2
- ``t.dtype in (...)``: the dtypes seen passing (a dtype without a kernel)
- ``t.dim[-1] == t.dim[-2]``
- ``len(l) == t.rank``, ``len(l) == k``
- ``v >= lo``, ``v <= hi``, ``v in (...)`` (small sets), ``-t.rank <= v < t.rank``
- for one-element int tensors (0-d axes, ks, bands): ``t.value >= 0``,
  ``-d.rank <= t.value < d.rank``, ``t.value <= d.dim[-1]`` / ``d.dim[-2]``

A predicate is proposed when it holds in every passing run (there must be a
few), fails in many invalid runs, and is unlikely to hold in all passing runs
by luck (judged by how often it holds in the invalid ones); the one that excludes the most invalid
runs wins (ties: the order above, so the result is deterministic). Terms are
read with the semantics of ``evaluate.py`` (a dimension past the rank is 1);
an unknown term satisfies the predicate.
"""
from __future__ import annotations

import math
from typing import AbstractSet, Any, Callable, Optional, Sequence

import numpy as np

from .evaluate import _elements
from ..model import ALL_DTYPES, DTYPE_CODE, INT, INT_LIST, SHAPE, TENSOR, TENSOR_LIST, AbstractInput, ApiSpec, TensorDesc

DIM_INDEX = (0, 1, -1, -2)
MIN_PASSING = 3
MIN_EXCLUDED = 3
MIN_EXCLUDED_SHARE = 0.25
#: a predicate's chance of holding in every passing run by luck, estimated as
#: (share of invalid runs it holds in) ** (passing runs), must be below this
MAX_CHANCE = 1e-3
MAX_SET = 4
MAX_DTYPES = 6


def _tensor(v) -> Optional[TensorDesc]:
    if isinstance(v, TensorDesc):
        return v
    if isinstance(v, list) and v and isinstance(v[0], TensorDesc):
        return v[0]
    return None


def _dim(t: TensorDesc, i: int) -> int:
    r = t.rank
    if i >= 0:
        return int(t.shape[i]) if i < r else 1
    return int(t.shape[r + i]) if r + i >= 0 else -1


class _Table:
    """Term values per run (NaN = unknown). ``cache``: rows computed before,
    by id of the run (the learner mines the same runs again and again; the
    cache keeps each run alive beside its row)."""

    def __init__(self, spec: ApiSpec, runs: Sequence[AbstractInput],
                 cache: Optional[dict] = None):
        self.tensors = [a.name for a in spec.args if a.kind in (TENSOR, TENSOR_LIST)]
        self.lists = [a.name for a in spec.args if a.kind in (INT_LIST, SHAPE)]
        self.ints = [a.name for a in spec.args if a.kind == INT]
        rows = []
        for ai in runs:
            hit = cache.get(id(ai)) if cache is not None else None
            if hit is None or hit[0] is not ai:
                hit = (ai, self._row(ai))
                if cache is not None:
                    cache[id(ai)] = hit
            rows.append(hit[1])
        names: dict[str, None] = {}
        for row in rows:
            names.update(dict.fromkeys(row))
        nan = math.nan
        self.cols = {k: np.array([row.get(k, nan) for row in rows], dtype=float) for k in names}
        self.valued = {k[: -len(".value")] for k in names if k.endswith(".value")}
        self.n = len(runs)

    def _row(self, ai: AbstractInput) -> dict:
        row: dict = {}
        for t in self.tensors:
            d = _tensor(ai.args.get(t))
            if d is None:
                continue
            row[f"{t}.rank"] = d.rank
            row[f"{t}.dtype"] = DTYPE_CODE.get(d.dtype, math.nan)
            for k in DIM_INDEX:
                row[f"{t}.dim[{k}]"] = _dim(d, k)
            vals = _elements(ai.args.get(t), ai.value_seed, t)
            if vals is not None and len(vals) == 1 and isinstance(vals[0], int):
                row[f"{t}.value"] = vals[0]
        for j, t in enumerate(self.tensors):
            d = _tensor(ai.args.get(t))
            for u in self.tensors[j + 1:]:
                e = _tensor(ai.args.get(u))
                if d is not None and e is not None:
                    row[f"same({t},{u})"] = float(tuple(d.shape) == tuple(e.shape))
        for name in self.lists:
            v = ai.args.get(name)
            if isinstance(v, list):
                row[f"len({name})"] = len(v)
        for n in self.ints:
            v = ai.args.get(n)
            if isinstance(v, int) and not isinstance(v, bool):
                row[n] = v
        return row

    def get(self, term: str) -> np.ndarray:
        c = self.cols.get(term)
        return c if c is not None else np.full(self.n, math.nan)


def _candidates(table_pass: _Table) -> list[tuple[str, Callable[..., Any]]]:
    """(expression, vectorised test on a table) pairs, in a fixed order."""
    out: list[tuple[str, Callable[..., Any]]] = []
    P = table_pass

    def rng_of(term):
        v = P.get(term)
        v = v[~np.isnan(v)]
        return (int(v.min()), int(v.max()), sorted({int(x) for x in v})) if v.size else None

    for t in P.tensors:
        r = rng_of(f"{t}.rank")
        if r is None:
            continue
        lo, hi, vals = r
        if lo == hi:
            out.append((f"{t}.rank == {lo}", lambda T, t=t, lo=lo: T.get(f"{t}.rank") == lo))
        else:
            if lo > 0:
                out.append((f"{t}.rank >= {lo}", lambda T, t=t, lo=lo: T.get(f"{t}.rank") >= lo))
            if hi < 6:
                out.append((f"{t}.rank <= {hi}", lambda T, t=t, hi=hi: T.get(f"{t}.rank") <= hi))
    for i, t in enumerate(P.tensors):
        for u in P.tensors[i + 1:]:
            out.append((f"{t}.rank == {u}.rank",
                        lambda T, t=t, u=u: T.get(f"{t}.rank") == T.get(f"{u}.rank")))
            out.append((" and ".join([f"{t}.rank == {u}.rank"] + [f"{t}.dim[{k}] == {u}.dim[{k}]" for k in range(6)]),
                        lambda T, t=t, u=u: T.get(f"same({t},{u})") == 1))
            for big, small in ((t, u), (u, t)):
                out.append((f"{big}.rank == {small}.rank + 1",
                            lambda T, big=big, small=small: T.get(f"{big}.rank") == T.get(f"{small}.rank") + 1))
    for t in P.tensors:
        # dtypes: the ones seen passing (dtypes without a kernel fail)
        col = P.get(f"{t}.dtype")
        codes = sorted({int(c) for c in col[~np.isnan(col)]})
        if codes and len(codes) <= MAX_DTYPES:
            names = ", ".join(repr(ALL_DTYPES[c]) for c in codes)
            out.append((f"{t}.dtype in ({names},)" if len(codes) == 1 else f"{t}.dtype in ({names})",
                        lambda T, t=t, codes=tuple(codes): np.isin(T.get(f"{t}.dtype"), codes)))
    for t in P.tensors:
        out.append((f"{t}.rank >= 2 and {t}.dim[-1] == {t}.dim[-2]",
                    lambda T, t=t: (T.get(f"{t}.rank") >= 2) & (T.get(f"{t}.dim[-1]") == T.get(f"{t}.dim[-2]"))))
    for i, t in enumerate(P.tensors):
        for u in P.tensors[i + 1:]:
            for a in DIM_INDEX:
                for b in DIM_INDEX:
                    out.append((f"{t}.dim[{a}] == {u}.dim[{b}]",
                                lambda T, t=t, u=u, a=a, b=b: T.get(f"{t}.dim[{a}]") == T.get(f"{u}.dim[{b}]")))
    for l in P.lists:
        for t in P.tensors:
            out.append((f"len({l}) == {t}.rank", lambda T, l=l, t=t: T.get(f"len({l})") == T.get(f"{t}.rank")))
        r = rng_of(f"len({l})")
        if r and r[0] == r[1]:
            out.append((f"len({l}) == {r[0]}", lambda T, l=l, k=r[0]: T.get(f"len({l})") == k))
    for t in sorted(P.valued):
        term = f"{t}.value"
        out.append((f"{term} >= 0", lambda T, term=term: T.get(term) >= 0))
        for d in P.tensors:
            if d == t:
                continue
            out.append((f"-{d}.rank <= {term} and {term} < {d}.rank",
                        lambda T, term=term, d=d: (-T.get(f"{d}.rank") <= T.get(term))
                        & (T.get(term) < T.get(f"{d}.rank"))))
            for k in (-1, -2):
                out.append((f"{term} <= {d}.dim[{k}]",
                            lambda T, term=term, d=d, k=k: T.get(term) <= T.get(f"{d}.dim[{k}]")))
    for n in P.ints:
        r = rng_of(n)
        if r is None:
            continue
        lo, hi, vals = r
        for t in P.tensors:
            out.append((f"-{t}.rank <= {n} and {n} < {t}.rank",
                        lambda T, n=n, t=t: (-T.get(f"{t}.rank") <= T.get(n)) & (T.get(n) < T.get(f"{t}.rank"))))
        if len(vals) <= MAX_SET:
            # (one value: "x in (1,)", a tuple; "(1)" would be a number)
            out.append((f"{n} in ({', '.join(map(str, vals))}{',' if len(vals) == 1 else ''})",
                        lambda T, n=n, vals=tuple(vals): np.isin(T.get(n), vals)))
        out.append((f"{n} >= {lo}", lambda T, n=n, lo=lo: T.get(n) >= lo))
        out.append((f"{n} <= {hi}", lambda T, n=n, hi=hi: T.get(n) <= hi))
    return out


def mine(spec: ApiSpec, passing: Sequence[AbstractInput], invalid: Sequence[AbstractInput],
         exclude: AbstractSet[str] = frozenset(), cache: Optional[dict] = None) -> list[tuple[str, int]]:
    """Predicates true in every passing run and false in many invalid runs,
    best first: [(expression, invalid runs it excludes)]. ``cache``: a dict
    kept between calls (rows of runs seen before, see _Table)."""
    if len(passing) < MIN_PASSING or not invalid:
        return []
    P, I = _Table(spec, passing, cache), _Table(spec, invalid, cache)
    need = max(MIN_EXCLUDED, int(math.ceil(MIN_EXCLUDED_SHARE * len(invalid))))
    scored = []
    for order, (expr, test) in enumerate(_candidates(P)):
        if expr in exclude:
            continue
        with np.errstate(invalid="ignore"):
            ok_p = _truth(test, P)
            if not ok_p.all():
                continue
            excluded = int((~_truth(test, I)).sum())
        share_true = 1.0 - excluded / len(invalid)
        if excluded >= need and share_true ** len(passing) < MAX_CHANCE:
            scored.append((-excluded, order, expr))
    scored.sort()
    return [(e, -s) for s, _, e in scored]


def _truth(test, table: _Table) -> np.ndarray:
    """A test's truth per run; a comparison with an unknown (NaN) term is
    false in numpy, so rows where any referenced term is unknown count as
    satisfied (an absent optional argument constrains nothing)."""
    got = np.asarray(test(table), dtype=bool)
    # NaN anywhere in the row's referenced terms: find them by re-running the
    # test on a table with NaN replaced: rows that differ are unknown
    return got | _unknown_rows(test, table)


def _unknown_rows(test, table: _Table) -> np.ndarray:
    nan_rows = np.zeros(table.n, dtype=bool)
    probe = _Probe(table)
    test(probe)
    for term in probe.used:
        nan_rows |= np.isnan(table.get(term))
    return nan_rows


class _Probe:
    def __init__(self, table: _Table):
        self.table = table
        self.used: list[str] = []

    def get(self, term: str) -> np.ndarray:
        self.used.append(term)
        return self.table.get(term)
