"""The shape abstraction: AbstractInput -> fixed-width float32 feature vector.

A :class:`FeatureSchema` is compiled once per API from its :class:`ApiSpec`.
Scoring then runs in two stages:

1. a per-input Python pass writes a *raw* row (tensor ranks, dimensions from
   the front and from the back, element counts, dtype codes, list items,
   scalar values...) with one small extractor per argument;
2. a batched numpy pass turns the raw matrix into the feature matrix: copies
   of raw columns plus *relational* features that trees cannot learn from raw
   sizes (equal dimensions across tensors, divisibility, rank arithmetic,
   list length vs rank, axis-in-range checks, broadcast compatibility...).

Conventions of the output:

- a missing dimension (position >= rank, or absent tensor) is ``-1``;
- a missing scalar / list item / range bound is ``NaN``;
- a relational feature that does not apply (an operand is missing, a divisor
  is zero) is ``NaN``; the classifier kinds all handle NaN natively;
- boolean features are 0/1.

The width is bounded by :data:`MAX_FEATURES`. Features are added in tiers of
decreasing priority (base features, key relations, full dimension relations,
divisibility/differences) until the budget is used, so the layout only
depends on the spec. The schema is versioned (:data:`FEATURE_VERSION`) and
carries a fingerprint of everything the layout depends on, so a model is never
scored with features it was not trained on.
"""
from __future__ import annotations

import hashlib
import json
import zlib
from typing import Any, Callable, Iterable, Optional, Sequence

import numpy as np

from .errors import UserError
from .model import (BOOL, BOOL_LIST, DTYPE, DTYPE_CODE, DTYPE_LIST, FLOAT, FLOAT_LIST, INT,
                    INT_DTYPES, INT_LIST, SCALAR, SHAPE, STR, STR_LIST, TENSOR, TENSOR_LIST,
                    AbstractInput, ApiSpec, ArgSpec, DTypeValue, TensorDesc)

#: bump whenever the meaning or layout of any feature changes
FEATURE_VERSION = 1
#: hard cap on the width of a schema
MAX_FEATURES = 512
#: dimensions per tensor (padded / truncated)
MAX_DIMS = 6
#: tensor arguments (plus tensor-list items) that get features
MAX_TENSOR_SLOTS = 8
#: items of a tensor list that get their own rank/dims features
TENSOR_LIST_ITEMS = 2
#: items of an int/float list recorded from the front
LIST_ITEMS = 8
#: items of an int list recorded from the back (for end-aligned relations)
LIST_TAIL = 4
#: items of a str / dtype list recorded
SMALL_LIST_ITEMS = 4
#: explicit values (TensorDesc.values) of a small int tensor recorded
TENSOR_VALUES = 6

_NAN = float("nan")


class SchemaMismatchError(UserError):
    """A saved model's feature schema does not match the one built now
    (different feature version, API or spec fingerprint)."""


# --------------------------------------------------------------------------- helpers

def _num(v: Any) -> float:
    """A float for a scalar value; NaN for None and anything non-numeric."""
    t = type(v)
    if t is int or t is float or t is bool:
        return float(v)
    if v is None:
        return _NAN
    try:
        if isinstance(v, (int, float, np.integer, np.floating)):
            return float(v)
    except Exception:  # pragma: no cover - defensive
        pass
    return _NAN


def _dtype_code(v: Any) -> float:
    if isinstance(v, DTypeValue):
        v = v.name
    if isinstance(v, str):
        return float(DTYPE_CODE.get(v, -1))
    return _NAN if v is None else -1.0


def _str_code(allowed_index: Optional[dict], v: Any) -> float:
    if v is None:
        return _NAN
    if allowed_index is not None:
        try:
            return float(allowed_index.get(v, -1))
        except TypeError:  # unhashable
            return -1.0
    # no enumeration in the spec: a stable hash keeps equal strings equal
    return float(zlib.crc32(str(v).encode()) % 9973)


def _safe_prod(vals: Iterable[float]) -> float:
    p = 1.0
    for x in vals:
        p *= x
    return p


def _int_capable(a: ArgSpec) -> bool:
    """Whether a tensor argument may carry explicit integer values."""
    if a.dtypes is None:
        return True
    return any(d in INT_DTYPES for d in a.dtypes)


# --------------------------------------------------------------------------- compilation

class _Builder:
    """Collects raw columns, output features and the vectorised ops that map
    one to the other, under the width budget."""

    def __init__(self, budget: int):
        self.budget = budget
        self.raw_names: list[str] = []
        self.raw_index: dict[str, int] = {}
        self.names: list[str] = []
        # op kind -> list of tuples (out_col, operands...)
        self.ops: dict[str, list[tuple]] = {}

    # raw columns -------------------------------------------------------------
    def raw(self, name: str) -> int:
        if name in self.raw_index:
            return self.raw_index[name]
        self.raw_index[name] = len(self.raw_names)
        self.raw_names.append(name)
        return self.raw_index[name]

    def raw_block(self, prefix: str, parts: Sequence[str]) -> int:
        """Allocate consecutive raw columns; returns the first offset."""
        first = len(self.raw_names)
        for p in parts:
            self.raw(f"{prefix}.{p}")
        return first

    def col(self, name: str) -> int:
        return self.raw_index[name]

    # output features ---------------------------------------------------------
    @property
    def full(self) -> bool:
        return len(self.names) >= self.budget

    def add(self, name: str, op: str, *operands) -> bool:
        if len(self.names) >= self.budget:
            return False
        self.ops.setdefault(op, []).append((len(self.names),) + tuple(operands))
        self.names.append(name)
        return True


class _Slot:
    """A tensor position: a tensor argument or one item of a tensor list."""

    def __init__(self, label: str, arg: ArgSpec, is_item: bool):
        self.label = label
        self.arg = arg
        self.is_item = is_item
        self.ndims = max(0, min(MAX_DIMS, arg.max_rank if arg.max_rank is not None else MAX_DIMS))
        self.has_values = (not is_item) and _int_capable(arg) and arg.min_rank <= 1
        # raw column names
        self.present = f"{label}.present"
        self.rank = f"{label}.rank"
        self.numel = f"{label}.numel"
        self.dtype = f"{label}.dtype"

    def d(self, i: int) -> str:
        return f"{self.label}.d{i}"

    def t(self, k: int) -> str:
        """k-th dimension from the back (k=1 is the last)."""
        return f"{self.label}.t{k}"


_TENSOR_RAW = (["present", "rank"] + [f"d{i}" for i in range(MAX_DIMS)]
               + [f"t{k}" for k in range(1, MAX_DIMS + 1)]
               + ["numel", "dtype", "low", "high", "zero_dims"])
_VALUES_RAW = ["nvals", "vmin", "vmax", "vprod"] + [f"v{i}" for i in range(TENSOR_VALUES)]
_INT_LIST_RAW = (["present", "len"] + [f"i{i}" for i in range(LIST_ITEMS)]
                 + [f"b{k}" for k in range(1, LIST_TAIL + 1)] + ["min", "max", "prod"])
_FLOAT_LIST_RAW = ["present", "len"] + [f"i{i}" for i in range(LIST_ITEMS)] + ["min", "max"]
_SMALL_LIST_RAW = ["present", "len"] + [f"i{i}" for i in range(SMALL_LIST_ITEMS)]
_TLIST_RAW = ["present", "len", "same_rank", "same_shape", "same_dtype"]


def _tensor_filler(off: int, with_values: bool) -> Callable[[list, Any], None]:
    n_t = len(_TENSOR_RAW)
    nd = MAX_DIMS

    def fill(row: list, v: Any) -> None:
        if not isinstance(v, TensorDesc):
            row[off] = 0.0
            return
        shape = v.shape
        r = len(shape)
        row[off] = 1.0
        row[off + 1] = float(r)
        try:
            dims = [float(x) for x in shape[:nd]]
        except (TypeError, ValueError):
            dims = [_NAN] * min(r, nd)
        k = len(dims)
        row[off + 2: off + 2 + k] = dims
        if r:
            tail = dims if r <= nd else [float(x) for x in shape[-nd:]]
            tail = tail[::-1]
            row[off + 2 + nd: off + 2 + nd + len(tail)] = tail
        numel = _safe_prod(dims) if r <= nd else _safe_prod(float(x) for x in shape)
        row[off + 2 + 2 * nd] = numel
        row[off + 3 + 2 * nd] = _dtype_code(v.dtype)
        if v.low is not None:
            row[off + 4 + 2 * nd] = float(v.low)
        if v.high is not None:
            row[off + 5 + 2 * nd] = float(v.high)
        row[off + 6 + 2 * nd] = float(dims.count(0.0))
        if with_values:
            vals = v.values
            o = off + n_t
            if vals is None:
                row[o] = 0.0
            else:
                fv = [_num(x) for x in vals]
                row[o] = float(len(fv))
                if fv:
                    row[o + 1] = min(fv)
                    row[o + 2] = max(fv)
                row[o + 3] = _safe_prod(fv)
                head = fv[:TENSOR_VALUES]
                row[o + 4: o + 4 + len(head)] = head

    return fill


def _tensor_list_filler(off: int, item_offs: list[int]) -> Callable[[list, Any], None]:
    item_fill = [_tensor_filler(o, False) for o in item_offs]

    def fill(row: list, v: Any) -> None:
        if not isinstance(v, (list, tuple)):
            row[off] = 0.0
            for f in item_fill:
                f(row, None)
            return
        row[off] = 1.0
        row[off + 1] = float(len(v))
        ts = [x for x in v if isinstance(x, TensorDesc)]
        if ts:
            s0 = ts[0].shape
            row[off + 2] = float(all(len(t.shape) == len(s0) for t in ts))
            row[off + 3] = float(all(tuple(t.shape) == tuple(s0) for t in ts))
            row[off + 4] = float(all(t.dtype == ts[0].dtype for t in ts))
        for i, f in enumerate(item_fill):
            f(row, v[i] if i < len(v) else None)

    return fill


def _int_list_filler(off: int) -> Callable[[list, Any], None]:
    def fill(row: list, v: Any) -> None:
        if v is None:
            row[off] = 0.0
            return
        if not isinstance(v, (list, tuple)):
            v = [v]  # a bare int where a list is expected (torch int[] broadcast)
        row[off] = 1.0
        fv = [_num(x) for x in v]
        row[off + 1] = float(len(fv))
        head = fv[:LIST_ITEMS]
        row[off + 2: off + 2 + len(head)] = head
        tail = fv[::-1][:LIST_TAIL]
        o = off + 2 + LIST_ITEMS
        row[o: o + len(tail)] = tail
        if fv:
            row[o + LIST_TAIL] = min(fv)
            row[o + LIST_TAIL + 1] = max(fv)
        row[o + LIST_TAIL + 2] = _safe_prod(fv)

    return fill


def _float_list_filler(off: int) -> Callable[[list, Any], None]:
    def fill(row: list, v: Any) -> None:
        if v is None:
            row[off] = 0.0
            return
        if not isinstance(v, (list, tuple)):
            v = [v]
        row[off] = 1.0
        fv = [_num(x) for x in v]
        row[off + 1] = float(len(fv))
        head = fv[:LIST_ITEMS]
        row[off + 2: off + 2 + len(head)] = head
        if fv:
            row[off + 2 + LIST_ITEMS] = min(fv)
            row[off + 3 + LIST_ITEMS] = max(fv)

    return fill


def _small_list_filler(off: int, code: Callable[[Any], float]) -> Callable[[list, Any], None]:
    def fill(row: list, v: Any) -> None:
        if v is None:
            row[off] = 0.0
            return
        if not isinstance(v, (list, tuple)):
            v = [v]
        row[off] = 1.0
        row[off + 1] = float(len(v))
        head = [code(x) for x in v[:SMALL_LIST_ITEMS]]
        row[off + 2: off + 2 + len(head)] = head

    return fill


def _scalar_filler(off: int, code: Callable[[Any], float]) -> Callable[[list, Any], None]:
    def fill(row: list, v: Any) -> None:
        if v is None:
            row[off] = 0.0
            return
        row[off] = 1.0
        row[off + 1] = code(v)

    return fill


# --------------------------------------------------------------------------- the schema

class FeatureSchema:
    """Fixed-width feature layout for one API.

    Public fields: ``version``, ``api``, ``names`` and ``spec_fingerprint``.
    A schema built by :meth:`for_spec` (or restored by :meth:`from_json` from
    JSON that embeds the spec) can compute vectors; a *detached* one (older
    feature version) can only be compared.
    """

    def __init__(self, version: int, api: str, names: list[str], spec_fingerprint: str,
                 spec: Optional[ApiSpec] = None):
        self.version = int(version)
        self.api = api
        self.names = list(names)
        self.spec_fingerprint = spec_fingerprint
        self.spec = spec
        self._fillers: list[tuple[str, Callable[[list, Any], None]]] = []
        self._raw_width = 0
        self._ops: list[tuple[str, tuple[np.ndarray, ...]]] = []
        self._raw_template: list[float] = []
        self._compiled = False

    # ---------------------------------------------------------------- building
    @classmethod
    def for_spec(cls, spec: ApiSpec, *, max_features: int = MAX_FEATURES) -> "FeatureSchema":
        b = _Builder(max_features)
        fillers: list[tuple[str, Callable[[list, Any], None]]] = []
        slots: list[_Slot] = []
        int_lists: list[tuple[str, ArgSpec]] = []
        int_scalars: list[tuple[str, ArgSpec]] = []
        tensor_lists: list[tuple[str, ArgSpec]] = []
        dtype_args: dict[str, str] = {}
        tables: dict[str, Any] = {}
        tier0: list[Callable[..., None]] = []
        code: Callable[..., float]

        for a in spec.args:
            name = a.name
            if a.kind == TENSOR:
                if len(slots) >= MAX_TENSOR_SLOTS:
                    continue
                s = _Slot(name, a, False)
                slots.append(s)
                off = b.raw_block(name, _TENSOR_RAW)
                if s.has_values:
                    b.raw_block(name, _VALUES_RAW)
                fillers.append((name, _tensor_filler(off, s.has_values)))
                tier0.append(lambda s=s: _tensor_base(b, s))
            elif a.kind == TENSOR_LIST:
                off = b.raw_block(name, _TLIST_RAW)
                item_offs = []
                items = []
                for i in range(TENSOR_LIST_ITEMS):
                    if len(slots) >= MAX_TENSOR_SLOTS:
                        break
                    s = _Slot(f"{name}[{i}]", a, True)
                    items.append(s)
                    slots.append(s)
                    item_offs.append(b.raw_block(s.label, _TENSOR_RAW))
                fillers.append((name, _tensor_list_filler(off, item_offs)))
                tensor_lists.append((name, a))
                tier0.append(lambda name=name, items=items: _tensor_list_base(b, name, items))
            elif a.kind in (INT_LIST, SHAPE):
                off = b.raw_block(name, _INT_LIST_RAW)
                fillers.append((name, _int_list_filler(off)))
                int_lists.append((name, a))
                tier0.append(lambda name=name, a=a: _int_list_base(b, name, a))
            elif a.kind == FLOAT_LIST or a.kind == BOOL_LIST:
                off = b.raw_block(name, _FLOAT_LIST_RAW)
                fillers.append((name, _float_list_filler(off)))
                tier0.append(lambda name=name, a=a: _float_list_base(b, name, a))
            elif a.kind in (STR_LIST, DTYPE_LIST):
                off = b.raw_block(name, _SMALL_LIST_RAW)
                if a.kind == STR_LIST:
                    idx = _allowed_index(a)
                    tables[name] = list(a.allowed) if a.allowed is not None else None
                    code = (lambda x, idx=idx: _str_code(idx, x))
                else:
                    code = _dtype_code
                fillers.append((name, _small_list_filler(off, code)))
                tier0.append(lambda name=name, a=a: _small_list_base(b, name, a))
            elif a.kind in (INT, FLOAT, BOOL, SCALAR, STR, DTYPE):
                off = b.raw_block(name, ["present", "value"])
                if a.kind == STR:
                    idx = _allowed_index(a)
                    tables[name] = list(a.allowed) if a.allowed is not None else None
                    code = (lambda x, idx=idx: _str_code(idx, x))
                elif a.kind == DTYPE:
                    code = _dtype_code
                    dtype_args[name] = name
                else:
                    code = _num
                fillers.append((name, _scalar_filler(off, code)))
                if a.kind == INT:
                    int_scalars.append((name, a))
                tier0.append(lambda name=name, a=a: _scalar_base(b, name, a))
            # unknown kinds get no features (the fingerprint records the names)

        # tier 0: per-argument features
        for f in tier0:
            f()
        tensors = [s for s in slots if not s.is_item]
        # tier 1: key relations
        _tier1(b, spec, slots, tensors, int_lists, int_scalars, tensor_lists, dtype_args)
        # tier 2: full dimension relations
        _tier2(b, slots, tensors, int_scalars)
        # tier 3: divisibility and differences
        _tier3(b, slots, tensors, int_lists)

        fp = _fingerprint(spec.name, b.names, tables)
        schema = cls(FEATURE_VERSION, spec.name, b.names, fp, spec)
        schema._install(b, fillers)
        return schema

    def _install(self, b: _Builder, fillers) -> None:
        self._fillers = fillers
        self._raw_width = len(b.raw_names)
        self._raw_template = [_NAN] * self._raw_width
        ops = []
        for op, rows in b.ops.items():
            cols = list(zip(*rows))
            ops.append((op, tuple(np.asarray(c) for c in cols)))
        self._ops = ops
        self._compiled = True

    # ---------------------------------------------------------------- vectors
    @property
    def width(self) -> int:
        return len(self.names)

    def raw_matrix(self, inputs: Sequence[AbstractInput]) -> np.ndarray:
        """Stage 1: one raw row per input (float64)."""
        if not self._compiled:
            raise SchemaMismatchError(
                f"feature schema of {self.api} (version {self.version}) cannot compute features "
                f"with feature version {FEATURE_VERSION}")
        tmpl = self._raw_template
        fillers = self._fillers
        rows = []
        for ai in inputs:
            row = tmpl.copy()
            args = ai.args
            for name, fill in fillers:
                fill(row, args.get(name))
            rows.append(row)
        if not rows:
            return np.empty((0, self._raw_width), dtype=np.float64)
        return np.array(rows, dtype=np.float64)

    def matrix(self, inputs: Sequence[AbstractInput]) -> np.ndarray:
        """Feature matrix, shape (len(inputs), width), float32."""
        raw = self.raw_matrix(inputs)
        return self._from_raw(raw)

    def vector(self, ai: AbstractInput) -> np.ndarray:
        return self.matrix([ai])[0]

    def _from_raw(self, R: np.ndarray) -> np.ndarray:
        n = R.shape[0]
        out = np.empty((n, len(self.names)), dtype=np.float32)
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            for op, cols in self._ops:
                _OPS[op](R, out, *cols)
        return out

    # ---------------------------------------------------------------- identity
    def to_json(self) -> dict:
        d = {"version": self.version, "api": self.api, "names": list(self.names),
             "spec_fingerprint": self.spec_fingerprint}
        if self.spec is not None:
            d["spec"] = self.spec.to_dict()
        return d

    @classmethod
    def from_json(cls, d: dict) -> "FeatureSchema":
        """Restore a schema. When the JSON embeds the spec and has the current
        feature version, the schema is rebuilt from the spec (so it can compute
        vectors) and must reproduce the saved names and fingerprint."""
        try:
            version = int(d["version"])
            api = str(d["api"])
            names = [str(x) for x in d["names"]]
            fp = str(d["spec_fingerprint"])
        except (KeyError, TypeError, ValueError) as e:
            raise SchemaMismatchError(f"malformed feature schema: {e!s}") from None
        stored = cls(version, api, names, fp)
        if version == FEATURE_VERSION and d.get("spec") is not None:
            try:
                spec = ApiSpec.from_dict(d["spec"])
            except (KeyError, TypeError) as e:
                raise SchemaMismatchError(f"malformed spec in feature schema: {e!s}") from None
            built = cls.for_spec(spec)
            built.check_compatible(stored)
            return built
        return stored

    def check_compatible(self, other: "FeatureSchema") -> None:
        """Raise SchemaMismatchError unless ``other`` has the same version, API,
        fingerprint and feature names as this schema."""
        if other.version != self.version:
            raise SchemaMismatchError(
                f"feature version {other.version} does not match {self.version}; retrain the model")
        if other.api != self.api:
            raise SchemaMismatchError(f"schema is for API {other.api!r}, not {self.api!r}")
        if other.spec_fingerprint != self.spec_fingerprint or other.names != self.names:
            raise SchemaMismatchError(
                f"spec fingerprint {other.spec_fingerprint} of {other.api} does not match "
                f"{self.spec_fingerprint} (the API's arguments changed); retrain the model")

    def __repr__(self) -> str:
        return (f"FeatureSchema(api={self.api!r}, width={len(self.names)}, "
                f"version={self.version}, fingerprint={self.spec_fingerprint})")


def _allowed_index(a: ArgSpec) -> Optional[dict]:
    if a.allowed is None:
        return None
    idx: dict[Any, int] = {}
    for i, v in enumerate(a.allowed):
        try:
            idx.setdefault(v, i)
        except TypeError:
            pass
    return idx


def _fingerprint(api: str, names: list[str], tables: dict) -> str:
    blob = json.dumps({"v": FEATURE_VERSION, "api": api, "names": names, "tables": tables},
                      sort_keys=True, default=repr, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- tiers

def _tensor_base(b: _Builder, s: _Slot) -> None:
    L = s.label
    c = b.col
    b.add(f"{L}.present", "copy", c(s.present))
    b.add(f"{L}.rank", "copy", c(s.rank))
    for i in range(s.ndims):
        b.add(f"{L}.d{i}", "dim", c(s.d(i)))
    b.add(f"{L}.numel", "copy", c(s.numel))
    b.add(f"{L}.log_numel", "log1p", c(s.numel))
    b.add(f"{L}.dtype", "copy", c(s.dtype))
    b.add(f"{L}.low", "copy", c(f"{L}.low"))
    b.add(f"{L}.high", "copy", c(f"{L}.high"))
    b.add(f"{L}.zero_dims", "copy", c(f"{L}.zero_dims"))


def _tensor_list_base(b: _Builder, name: str, items: list[_Slot]) -> None:
    c = b.col
    for p in _TLIST_RAW:
        b.add(f"{name}.{p}", "copy", c(f"{name}.{p}"))
    for s in items:
        b.add(f"{s.label}.rank", "copy", c(s.rank))
        for i in range(s.ndims):
            b.add(f"{s.label}.d{i}", "dim", c(s.d(i)))
        b.add(f"{s.label}.dtype", "copy", c(s.dtype))


def _present(b: _Builder, name: str, a: ArgSpec) -> None:
    if a.optional or a.has_default:
        b.add(f"{name}.present", "copy", b.col(f"{name}.present"))


def _list_base(b: _Builder, name: str, a: ArgSpec, max_items: int, stats: tuple = ()) -> None:
    """present flag, length, the first items, then the named summary columns."""
    c = b.col
    _present(b, name, a)
    b.add(f"{name}.len", "copy", c(f"{name}.len"))
    n_items = max_items if a.length is None else min(max_items, a.length)
    for i in range(n_items):
        b.add(f"{name}[{i}]", "copy", c(f"{name}.i{i}"))
    for p in stats:
        b.add(f"{name}.{p}", "copy", c(f"{name}.{p}"))


def _int_list_base(b: _Builder, name: str, a: ArgSpec) -> None:
    _list_base(b, name, a, LIST_ITEMS, ("min", "max", "prod"))


def _float_list_base(b: _Builder, name: str, a: ArgSpec) -> None:
    _list_base(b, name, a, LIST_ITEMS, ("min", "max"))


def _small_list_base(b: _Builder, name: str, a: ArgSpec) -> None:
    _list_base(b, name, a, SMALL_LIST_ITEMS)


def _scalar_base(b: _Builder, name: str, a: ArgSpec) -> None:
    _present(b, name, a)
    b.add(f"{name}", "copy", b.col(f"{name}.value"))


def _tier1(b, spec, slots, tensors, int_lists, int_scalars, tensor_lists, dtype_args) -> None:
    c = b.col
    # tensors: dtype follows a dtype argument
    for s in tensors:
        ref = s.arg.dtype_ref
        if ref and ref in dtype_args:
            b.add(f"{s.label}.dtype==${ref}", "eq", c(s.dtype), c(f"{ref}.value"))
    # tensor lists whose length is given by an int argument
    for name, a in tensor_lists:
        if a.length_ref and b.raw_index.get(f"{a.length_ref}.value") is not None:
            b.add(f"{name}.len==${a.length_ref}", "eq", c(f"{name}.len"), c(f"{a.length_ref}.value"))
    for name, a in int_lists:
        if a.length_ref and b.raw_index.get(f"{a.length_ref}.value") is not None:
            b.add(f"{name}.len==${a.length_ref}", "eq", c(f"{name}.len"), c(f"{a.length_ref}.value"))
    # pairs of tensor slots: rank / dtype / shape relations
    for A, B in _pairs(slots):
        p = f"{A.label}~{B.label}"
        b.add(f"{p}.rank_diff", "sub", c(A.rank), c(B.rank))
        b.add(f"{p}.rank_eq", "eq", c(A.rank), c(B.rank))
        b.add(f"{p}.dtype_eq", "eq", c(A.dtype), c(B.dtype))
        b.add(f"{p}.numel_eq", "eq", c(A.numel), c(B.numel))
        b.add(f"{p}.same_shape", "same_shape", c(A.t(1)), c(B.t(1)), c(A.rank), c(B.rank))
        b.add(f"{p}.broadcastable", "broadcast_all", c(A.t(1)), c(B.t(1)))
        b.add(f"{p}.last_eq", "eq", c(A.t(1)), c(B.t(1)))
        b.add(f"{p}.first_eq", "eq", c(A.d(0)), c(B.d(0)))
        b.add(f"{p}.last_first_eq", "eq", c(A.t(1)), c(B.d(0)))
        b.add(f"{p}.first_last_eq", "eq", c(A.d(0)), c(B.t(1)))
    # int lists vs tensors: length vs rank, axes in range, product vs numel
    for name, a in int_lists:
        for s in tensors:
            p = f"{name}~{s.label}"
            L, R = c(f"{name}.len"), c(s.rank)
            b.add(f"{p}.len==rank", "eq_affine", L, R, 1.0, 0.0)
            b.add(f"{p}.len==rank-2", "eq_affine", L, R, 1.0, -2.0)
            b.add(f"{p}.len==2*rank", "eq_affine", L, R, 2.0, 0.0)
            b.add(f"{p}.len==2*(rank-2)", "eq_affine", L, R, 2.0, -4.0)
            b.add(f"{p}.max<rank", "lt", c(f"{name}.max"), R)
            b.add(f"{p}.min>=-rank", "ge_neg", c(f"{name}.min"), R)
            b.add(f"{p}.prod==numel", "eq", c(f"{name}.prod"), c(s.numel))
    # int scalars vs tensors: axis checks
    for name, a in int_scalars:
        for s in tensors:
            p = f"{name}~{s.label}"
            V, R = c(f"{name}.value"), c(s.rank)
            b.add(f"{p}.<rank", "lt", V, R)
            b.add(f"{p}.in[-rank,rank)", "axis_ok", V, R)
            b.add(f"{p}.==rank", "eq", V, R)


def _tier2(b, slots, tensors, int_scalars) -> None:
    c = b.col
    # explicit values of small int tensors (shape / axes tensors) and their relations
    for s in tensors:
        if not s.has_values:
            continue
        L = s.label
        for p in _VALUES_RAW:
            b.add(f"{L}.{p}", "copy", c(f"{L}.{p}"))
        for o in tensors:
            if o is s:
                continue
            p = f"{L}.values~{o.label}"
            b.add(f"{p}.prod==numel", "eq", c(f"{L}.vprod"), c(o.numel))
            b.add(f"{p}.n==rank", "eq", c(f"{L}.nvals"), c(o.rank))
            b.add(f"{p}.max<rank", "lt", c(f"{L}.vmax"), c(o.rank))
            b.add(f"{p}.min>=-rank", "ge_neg", c(f"{L}.vmin"), c(o.rank))
    # dimension equality across tensors (all i, j), end-aligned equality / broadcast
    for A, B in _pairs(slots):
        p = f"{A.label}~{B.label}"
        for i in range(A.ndims):
            for j in range(B.ndims):
                b.add(f"{p}.d{i}==d{j}", "eq", c(A.d(i)), c(B.d(j)))
        for k in range(1, min(A.ndims, B.ndims, 4) + 1):
            b.add(f"{p}.t{k}_eq", "eq", c(A.t(k)), c(B.t(k)))
            b.add(f"{p}.t{k}_bcast", "broadcast1", c(A.t(k)), c(B.t(k)))
    # int scalars dividing dims (groups, block sizes, num_split)
    for name, a in int_scalars:
        for s in tensors:
            for i in range(s.ndims):
                b.add(f"{s.label}.d{i}%{name}==0", "mod0", c(s.d(i)), c(f"{name}.value"))
    # equal dimensions within one tensor
    for s in tensors:
        for i in range(s.ndims):
            for j in range(i + 1, s.ndims):
                b.add(f"{s.label}.d{i}==d{j}", "eq", c(s.d(i)), c(s.d(j)))


def _tier3(b, slots, tensors, int_lists) -> None:
    c = b.col
    for A, B in _pairs(slots):
        p = f"{A.label}~{B.label}"
        for i in range(min(A.ndims, B.ndims)):
            b.add(f"{p}.d{i}-d{i}", "sub", c(A.d(i)), c(B.d(i)))
        if A.ndims and B.ndims:
            b.add(f"{p}.t1-t1", "sub", c(A.t(1)), c(B.t(1)))
        for i in range(A.ndims):
            for j in range(B.ndims):
                b.add(f"{p}.d{i}%d{j}==0", "mod0", c(A.d(i)), c(B.d(j)))
                b.add(f"{p}.rev.d{j}%d{i}==0", "mod0", c(B.d(j)), c(A.d(i)))
    # list items vs dims: front-aligned and end-aligned (kernel sizes, paddings)
    for name, a in int_lists:
        for s in tensors:
            p = f"{name}~{s.label}"
            for i in range(min(s.ndims, LIST_ITEMS)):
                b.add(f"{p}[{i}]<=d{i}", "le", c(f"{name}.i{i}"), c(s.d(i)))
            for k in range(1, min(s.ndims, LIST_TAIL) + 1):
                b.add(f"{p}[-{k}]<=t{k}", "le", c(f"{name}.b{k}"), c(s.t(k)))


def _pairs(slots: list[_Slot]):
    for i in range(len(slots)):
        for j in range(i + 1, len(slots)):
            yield slots[i], slots[j]


# --------------------------------------------------------------------------- vectorised ops

def _op_copy(R, out, o, a):
    out[:, o] = R[:, a]


def _op_dim(R, out, o, a):
    x = R[:, a]
    out[:, o] = np.where(np.isnan(x), -1.0, x)


def _op_log1p(R, out, o, a):
    x = R[:, a]
    out[:, o] = np.log1p(np.maximum(x, 0.0))


def _nan_where(res, *operands):
    bad = np.isnan(operands[0])
    for x in operands[1:]:
        bad |= np.isnan(x)
    res = res.astype(np.float64)
    res[bad] = np.nan
    return res


def _op_eq(R, out, o, a, b):
    A, B = R[:, a], R[:, b]
    out[:, o] = _nan_where(A == B, A, B)


def _op_sub(R, out, o, a, b):
    out[:, o] = R[:, a] - R[:, b]


def _op_lt(R, out, o, a, b):
    A, B = R[:, a], R[:, b]
    out[:, o] = _nan_where(A < B, A, B)


def _op_le(R, out, o, a, b):
    A, B = R[:, a], R[:, b]
    out[:, o] = _nan_where(A <= B, A, B)


def _op_ge_neg(R, out, o, a, b):
    A, B = R[:, a], R[:, b]
    out[:, o] = _nan_where(A >= -B, A, B)


def _op_axis_ok(R, out, o, a, b):
    A, B = R[:, a], R[:, b]
    out[:, o] = _nan_where((A >= -B) & (A < B), A, B)


def _op_eq_affine(R, out, o, a, b, k, d):
    A, B = R[:, a], R[:, b]
    out[:, o] = _nan_where(A == B * k + d, A, B)


def _op_mod0(R, out, o, a, b):
    A, B = R[:, a], R[:, b]
    safe = np.where(B == 0, 1.0, B)
    res = (np.fmod(A, safe) == 0).astype(np.float64)
    res[np.isnan(A) | np.isnan(B) | (B == 0)] = np.nan
    out[:, o] = res


def _op_broadcast1(R, out, o, a, b):
    A, B = R[:, a], R[:, b]
    res = ((A == B) | (A == 1) | (B == 1)).astype(np.float64)
    res[np.isnan(A) | np.isnan(B)] = np.nan
    out[:, o] = res


def _shape_cols(t1):
    # t1 -> columns t1..t6 (consecutive by construction)
    return t1[:, None] + np.arange(MAX_DIMS)[None, :]


def _op_broadcast_all(R, out, o, ta, tb):
    A = R[:, _shape_cols(ta)]  # (n, pairs, 6)
    B = R[:, _shape_cols(tb)]
    ok = (A == B) | (A == 1) | (B == 1) | np.isnan(A) | np.isnan(B)
    out[:, o] = ok.all(axis=2)


def _op_same_shape(R, out, o, ta, tb, ra, rb):
    A = R[:, _shape_cols(ta)]
    B = R[:, _shape_cols(tb)]
    eq = (A == B) | (np.isnan(A) & np.isnan(B))
    res = (eq.all(axis=2) & (R[:, ra] == R[:, rb])).astype(np.float64)
    res[np.isnan(R[:, ra]) | np.isnan(R[:, rb])] = np.nan
    out[:, o] = res


_OPS: dict[str, Callable[..., None]] = {
    "copy": _op_copy, "dim": _op_dim, "log1p": _op_log1p, "eq": _op_eq, "sub": _op_sub,
    "lt": _op_lt, "le": _op_le, "ge_neg": _op_ge_neg, "axis_ok": _op_axis_ok,
    "eq_affine": _op_eq_affine, "mod0": _op_mod0, "broadcast1": _op_broadcast1,
    "broadcast_all": _op_broadcast_all, "same_shape": _op_same_shape,
}
