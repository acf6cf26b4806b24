"""Constraints derived from an ApiSpec (framework registry), plus YAML rules.

Every decision the input needs becomes a Z3 integer (or boolean) variable:

    <arg>.rank, <arg>.d0 .. <arg>.d5     tensors (and the item template of tensor lists)
    <arg>.len, <arg>.i0 .. <arg>.i7      lists (ints / shapes), tensor-list lengths
    <arg>.val                            ints, bools, enum / dtype choices (as codes)
    <arg>.present                        optional arguments

with ACETest-like default bounds (ranks 0..6, dimension sizes kept small so a
tensor stays within a few thousand elements, small integer ranges). The
sampler spreads solutions with random targets that also propose the
equalities shapes usually need (equal ranks, equal dimensions across
tensors, list length == rank, axis within rank); they are assumptions, so the
solver drops them when the hard constraints disagree.
"""
from __future__ import annotations

import functools
import math
import random
from typing import Any, Sequence

import numpy as np
import z3

from ..model import (BOOL, BOOL_LIST, DTYPE, DTYPE_LIST, FLOAT, FLOAT_LIST, INT, INT_LIST, SCALAR,
                     SHAPE, STR, STR_LIST, TENSOR, TENSOR_LIST, AbstractInput, ApiSpec, ArgSpec,
                     DTypeValue, TensorDesc, dtype_kind)
from .problem import Problem, int_value
from .rules import Terms, compile_rule

MAX_RANK = 6
MAX_LIST = 8
#: elements of a small tensor that rules may decide (``x.value``, ``x[i]``)
MAX_TENSOR_VALUES = 16
TENSOR_VALUE_RANGE = (-16, 64)
#: share of cheap mutations that change the structure (a rank, a length, a
#: dtype or enum code, a flag) instead of dims and values
STRUCTURE_SHARE = 0.4
DEFAULT_DTYPES = ["float32", "float64", "int32", "int64"]
BUILDABLE = {"float16", "bfloat16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8",
             "uint16", "uint32", "uint64", "bool", "complex64", "complex128", "string"}

# argument names whose integer items are window sizes / steps (>= 1)
_POSITIVE_LIST_NAMES = {"strides", "stride", "dilations", "dilation", "ksize", "kernel_size",
                        "window_strides", "window_dimensions", "rates", "block_shape", "sizes"}
# integer arguments that count or size something (>= 1 when valid)
_COUNT_NAMES = {"groups", "num_groups", "block_size", "upscale_factor", "downscale_factor", "num_split",
                "depth", "num_segments", "num_classes", "k", "repeats", "chunks", "sections"}
_AXIS_NAMES = {"axis", "dim", "dimension", "axes", "dims", "split_dim", "concat_dim", "start_dim",
               "end_dim", "dim0", "dim1", "source", "destination"}
# integer tensors whose contents index into another tensor ("roles"): an
# axis is a scalar within the data tensor's rank, a per-dimension vector has
# one entry per dimension of it, paddings are [rank, 2], perm a permutation
_AXIS_TENSOR_NAMES = _AXIS_NAMES | {"reduction_indices", "split_dim", "axis_tensor"}
_PER_DIM_NAMES = {"multiples", "begin", "end", "size", "shape", "new_shape", "block_shape",
                  "strides", "dims", "ksize", "out_shape", "output_shape"}
_PADDING_NAMES = {"paddings", "crops", "pads"}
_PERM_NAMES = {"perm"}
_ROLE_NAMES = _AXIS_TENSOR_NAMES | _PER_DIM_NAMES | _PADDING_NAMES | _PERM_NAMES
_RANK_WEIGHTS = [(0, 4), (1, 14), (2, 22), (3, 20), (4, 24), (5, 10), (6, 6)]
_DIM_WEIGHTS = [(0, 2), (1, 22), (2, 18), (3, 16), (4, 12), (5, 6), (6, 6), (7, 4), (8, 5), (12, 3),
                (16, 3)]


_COUNT_PICKS = [1, 1, 2, 2, 3, 4]
_INT_PICKS = [0, 1, 1, 2, 2, 3, 4]
_ITEM_PICKS = [0, 1, 1, 1, 2, 2, 3, 4]
_TVAL_PICKS = [-1, 0, 1, 1, 2, 2, 3, 4, 8]


def _dim_hi(rank: int) -> int:
    """The largest dimension size ``_dim_cap`` allows at this rank."""
    return 64 if rank <= 2 else 16 if rank == 3 else 10 if rank == 4 else 5


@functools.lru_cache(maxsize=None)
def _dim_table(hi: int) -> tuple[np.ndarray, np.ndarray]:
    """The target dimension sizes up to ``hi`` and their cumulative weights."""
    pairs = [(v, w) for v, w in _DIM_WEIGHTS if 1 <= v <= hi]
    vals = np.array([v for v, _ in pairs])
    w = np.array([w for _, w in pairs], dtype=float)
    return vals, np.cumsum(w / w.sum())[:-1]


def _weighted(rng: random.Random, pairs: Sequence[tuple[int, int]]) -> int:
    total = sum(w for _, w in pairs)
    x = rng.randrange(total)
    for v, w in pairs:
        x -= w
        if x < 0:
            return v
    return pairs[-1][0]


def _dim_cap(rank_var: z3.ArithRef, d: z3.ArithRef) -> list[z3.BoolRef]:
    """Keep a tensor within a few thousand elements: linear bounds per rank."""
    return [d >= 0,
            z3.Implies(rank_var <= 2, d <= 64),
            z3.Implies(rank_var == 3, d <= 16),
            z3.Implies(rank_var == 4, d <= 10),
            z3.Implies(rank_var >= 5, d <= 5)]


#: the ranges a float tensor's elements are drawn from (one at random, or
#: the one a rule on ``x.low`` / ``x.high`` leaves: rules.py)
FLOAT_RANGES = ((-1.0, 1.0), (0.0, 1.0), (-10.0, 10.0), (0.5, 2.0))

#: Z3 contexts made ahead, unused (``spare_context``)
_SPARE_CONTEXTS: list = []


def spare_context() -> bool:
    """Make a Z3 context for the next RegistryProblem now (a context costs
    ~8 ms, and one that was never used is as good as a new one); False when
    one is waiting already. The generator process calls it while idle, so a
    rule change does not wait for it."""
    if _SPARE_CONTEXTS:
        return False
    _SPARE_CONTEXTS.append(z3.Context())
    return True


def _new_context() -> z3.Context:
    """A context no solver has used: the spare one if made, else a new one."""
    return _SPARE_CONTEXTS.pop() if _SPARE_CONTEXTS else z3.Context()


class RegistryProblem(Problem, Terms):
    """Constraints for one ApiSpec. ``rules`` are extra expressions (rules.py)."""

    def __init__(self, spec: ApiSpec, rules: Sequence[str] = (), *, rules_source: str = "rules"):
        self.spec = spec
        self.ctx = _new_context()  # own context: sampling is deterministic per (problem, seed)
        self.rules: list[str] = []
        self._vars: dict[str, z3.ExprRef] = {}
        self._hard: list[z3.BoolRef] = []
        self._dtype_sets: dict[str, list[str]] = {}   # dtype var name -> allowed list
        self._tensor_dtype_var: dict[str, str] = {}   # tensor arg -> dtype var name
        self._value_vars: dict[str, int] = {}         # tensor arg -> element vars made for rules
        self._build()
        self._add_rules(rules, rules_source)

    def _add_rules(self, rules: Sequence[str], rules_source: str) -> None:
        for r in rules:
            self._hard.append(compile_rule(r, self, where=f"{rules_source}: {self.spec.name}[{len(self.rules)}]"))
            self.rules.append(r)
        self.set_id = "registry" + ("+rules" if self.rules else "")

    def with_rules(self, rules: Sequence[str], *, rules_source: str = "rules") -> "RegistryProblem":
        """This problem plus ``rules``, in a new context of its own: the
        formulas are copied into it by Z3 (``translate``) instead of being
        built again term by term, which is most of a rule change's cost on
        a fast API. Use it on a problem no solver has used (its context is
        then in the same state whoever copies it, so the copy is too)."""
        new = object.__new__(RegistryProblem)
        new.__dict__.update(self.__dict__)
        new.ctx = _new_context()
        new._vars = {k: v.translate(new.ctx) for k, v in self._vars.items()}
        new._hard = [f.translate(new.ctx) for f in self._hard]
        new._dtype_sets = dict(self._dtype_sets)
        new._tensor_dtype_var = dict(self._tensor_dtype_var)
        new._value_vars = dict(self._value_vars)
        new.rules = list(self.rules)
        new._add_rules(rules, rules_source)
        return new

    # -- variables ------------------------------------------------------------
    def _int(self, name: str) -> z3.ArithRef:
        v = self._vars.get(name)
        if v is None:
            v = self._vars[name] = z3.Int(name, self.ctx)
        return v

    def _bool_var(self, name: str) -> z3.BoolRef:
        v = self._vars.get(name)
        if v is None:
            v = self._vars[name] = z3.Bool(name, self.ctx)
        return v

    def _arg(self, name: str) -> ArgSpec:
        return self.spec.arg(name)

    def _build(self) -> None:
        spec = self.spec
        group = spec.notes.get("same_dtype_group") or []
        group_set: list[str] | None = None
        for a in spec.args:
            if a.kind in (TENSOR, TENSOR_LIST) and a.name in group and a.dtypes:
                group_set = [d for d in a.dtypes if d in BUILDABLE]
                break
        if group_set:
            self._dtype_sets["__group__.val"] = group_set
            v = self._int("__group__.val")
            self._hard += [v >= 0, v < len(group_set)]
        for a in spec.args:
            if a.optional or a.has_default:
                self._bool_var(f"{a.name}.present")
            kind = a.kind
            if kind in (TENSOR, TENSOR_LIST):
                self._tensor_vars(a, a.name in group and group_set is not None)
            elif kind in (INT,):
                self._int_value(a)
            elif kind == BOOL:
                self._bool_var(f"{a.name}.val")
            elif kind == STR and a.allowed:
                v = self._int(f"{a.name}.val")
                self._hard += [v >= 0, v < len(a.allowed)]
            elif kind == DTYPE:
                allowed = [d for d in (a.allowed or sorted(BUILDABLE - {"string"})) if d in BUILDABLE]
                if not allowed:
                    allowed = list(DEFAULT_DTYPES)
                self._dtype_sets[f"{a.name}.val"] = allowed
                v = self._int(f"{a.name}.val")
                self._hard += [v >= 0, v < len(allowed)]
            elif kind in (INT_LIST, SHAPE):
                self._int_list(a)
        # tensor-list lengths bound to an INT argument (TF number_attr)
        for a in spec.args:
            if a.kind == TENSOR_LIST and a.length_ref and spec.has_arg(a.length_ref):
                self._hard.append(self._int(f"{a.name}.len") == self._int(f"{a.length_ref}.val"))

    def _tensor_vars(self, a: ArgSpec, in_group: bool) -> None:
        r = self._int(f"{a.name}.rank")
        self._hard += [r >= max(0, a.min_rank), r <= min(MAX_RANK, a.max_rank)]
        for i in range(MAX_RANK):
            d = self._int(f"{a.name}.d{i}")
            self._hard += _dim_cap(r, d)
            self._hard += [d >= 1, z3.Implies(r <= i, d == 1)]
        if a.kind == TENSOR_LIST:
            n = self._int(f"{a.name}.len")
            lo = max(a.min_length, 0)
            if a.length is not None:
                self._hard.append(n == a.length)
            self._hard += [n >= lo, n <= 6]
        if a.dtype_ref and self.spec.has_arg(a.dtype_ref):
            self._tensor_dtype_var[a.name] = f"{a.dtype_ref}.val"
        elif in_group:
            self._tensor_dtype_var[a.name] = "__group__.val"
        else:
            allowed = [d for d in (a.dtypes or DEFAULT_DTYPES) if d in BUILDABLE] or list(DEFAULT_DTYPES)
            key = f"{a.name}.dtype"
            self._dtype_sets[key] = allowed
            v = self._int(key)
            self._hard += [v >= 0, v < len(allowed)]
            self._tensor_dtype_var[a.name] = key

    def _int_value(self, a: ArgSpec) -> None:
        v = self._int(f"{a.name}.val")
        lo, hi = self._int_bounds(a)
        self._hard += [v >= lo, v <= hi]
        if a.allowed:
            self._hard.append(z3.Or(*[v == int(x) for x in a.allowed]))

    def _int_bounds(self, a: ArgSpec) -> tuple[int, int]:
        if a.name in _AXIS_NAMES:
            lo, hi = -MAX_RANK, MAX_RANK - 1
        elif a.name in _COUNT_NAMES:
            lo, hi = 0, 16
        else:
            lo, hi = -4, 64
        if a.minimum is not None:
            lo = max(lo, int(a.minimum))
            hi = max(hi, lo + 8)
        if a.maximum is not None:
            hi = min(hi, int(a.maximum))
            lo = min(lo, hi)
        return lo, hi

    def _int_list(self, a: ArgSpec) -> None:
        n = self._int(f"{a.name}.len")
        if a.length is not None:
            self._hard.append(n == a.length)
        else:
            self._hard += [n >= max(0, a.min_length), n <= MAX_LIST]
        if a.name in _POSITIVE_LIST_NAMES:
            lo, hi = 1, 4
        elif a.kind == SHAPE:
            lo, hi = -1, 8
        elif a.name in _AXIS_NAMES:
            lo, hi = -MAX_RANK, MAX_RANK - 1
        else:
            lo, hi = -2, 16
            if a.minimum is not None:
                lo = int(a.minimum)
        for i in range(MAX_LIST):
            x = self._int(f"{a.name}.i{i}")
            self._hard += [z3.Implies(n > i, z3.And(x >= lo, x <= hi)), z3.Implies(n <= i, x == 0)]

    # -- Problem interface ----------------------------------------------------
    def formulas(self) -> Sequence[z3.BoolRef]:
        return self._hard

    def _tensor_args(self) -> list[ArgSpec]:
        return [a for a in self.spec.args if a.kind in (TENSOR, TENSOR_LIST)]

    def random_targets(self, rng: random.Random) -> list[z3.BoolRef]:
        t: list[z3.BoolRef] = []
        tensors = self._tensor_args()

        def rank(a):
            return self._int(f"{a.name}.rank")

        def dim(a, i):
            return self._int(f"{a.name}.d{i}")

        data = self._data_tensor()
        for a in tensors:
            if a.kind == TENSOR and a.name in _ROLE_NAMES and data is not None and rng.random() < 0.85:
                t.insert(0, self._role_target(a, data))
            if rng.random() < 0.8:
                t.append(rank(a) == _weighted(rng, _RANK_WEIGHTS))
            for i in range(MAX_RANK):
                if rng.random() < 0.7:
                    t.append(z3.Implies(rank(a) > i, dim(a, i) == _weighted(rng, _DIM_WEIGHTS)))
            if a.kind == TENSOR_LIST and rng.random() < 0.8:
                t.append(self._int(f"{a.name}.len") == rng.randint(1, 4))
        if len(tensors) >= 2:
            # shapes of related tensors usually agree: propose whole-shape
            # equality, same rank with mostly equal dims, or single equalities
            anchor = tensors[0]
            for b in tensors[1:]:
                a = anchor if rng.random() < 0.7 else rng.choice(tensors)
                if a is b:
                    continue
                mode = rng.random()
                if mode < 0.35:
                    t.insert(0, z3.And(rank(a) == rank(b), *[dim(a, i) == dim(b, i) for i in range(MAX_RANK)]))
                elif mode < 0.55:
                    t.insert(0, rank(a) == rank(b))
                    for i in range(MAX_RANK):
                        if rng.random() < 0.7:
                            t.insert(0, dim(a, i) == dim(b, i))
                else:
                    for _ in range(rng.randint(0, 3)):
                        i, j = rng.randrange(MAX_RANK), rng.randrange(MAX_RANK)
                        t.insert(0, z3.Implies(z3.And(rank(a) > i, rank(b) > j), dim(a, i) == dim(b, j)))
        for a in self.spec.args:
            name = a.name
            if f"{name}.present" in self._vars and rng.random() < 0.9:
                t.append(self._vars[f"{name}.present"] == (rng.random() < 0.5))
            if a.kind == INT and rng.random() < 0.8:
                v = self._int(f"{name}.val")
                if a.name in _AXIS_NAMES and tensors:
                    r = self._int(f"{rng.choice(tensors).name}.rank")
                    t.append(z3.And(v >= -r, v < r))
                elif a.name in _COUNT_NAMES:
                    t.append(v == rng.choice([1, 1, 2, 2, 3, 4]))
                else:
                    t.append(v == rng.choice([0, 1, 1, 2, 2, 3, 4, rng.randint(-2, 16)]))
            elif a.kind in (STR, DTYPE) and f"{name}.val" in self._vars:
                size = len(a.allowed or []) if a.kind == STR else len(self._dtype_sets[f"{name}.val"])
                if size:
                    t.append(self._vars[f"{name}.val"] == rng.randrange(size))
            elif a.kind == BOOL:
                t.append(self._vars[f"{name}.val"] == (rng.random() < 0.5))
            elif a.kind in (INT_LIST, SHAPE):
                n = self._int(f"{name}.len")
                if a.length is None and tensors and rng.random() < 0.6:
                    t.insert(0, n == self._int(f"{rng.choice(tensors).name}.rank"))
                elif a.length is None and rng.random() < 0.7:
                    t.append(n == rng.randint(0, 4))
                for i in range(MAX_LIST):
                    if rng.random() < 0.6:
                        t.append(z3.Implies(n > i, self._int(f"{name}.i{i}") == rng.choice([0, 1, 1, 1, 2, 2, 3, 4])))
            elif a.kind == TENSOR or a.kind == TENSOR_LIST:
                key = self._tensor_dtype_var.get(name)
                if key and key.endswith(".dtype") and rng.random() < 0.8:
                    t.append(self._int(key) == rng.randrange(len(self._dtype_sets[key])))
        for arg, n in self._value_vars.items():
            for i in range(n):
                if rng.random() < 0.8:
                    t.append(self._int(f"{arg}.v{i}") == rng.choice([-1, 0, 1, 1, 2, 2, 3, 4, 8]))
        for key, allowed in self._dtype_sets.items():
            if key == "__group__.val" and rng.random() < 0.8:
                t.append(self._int(key) == rng.randrange(len(allowed)))
        return t

    def _data_tensor(self) -> ArgSpec | None:
        """The first tensor argument that is not an index-like role."""
        for a in self.spec.args:
            if a.kind == TENSOR and a.name not in _ROLE_NAMES:
                return a
        return None

    def _role_target(self, a: ArgSpec, data: ArgSpec) -> z3.BoolRef:
        r = self._int(f"{a.name}.rank")
        dr = self._int(f"{data.name}.rank")
        if a.name in _AXIS_TENSOR_NAMES:
            return r == 0
        if a.name in _PADDING_NAMES:
            return z3.And(r == 2, self._int(f"{a.name}.d0") == dr, self._int(f"{a.name}.d1") == 2)
        return z3.And(r == 1, self._int(f"{a.name}.d0") == dr)

    def block(self, model: z3.ModelRef) -> z3.BoolRef | None:
        diffs = []
        for name, v in self._vars.items():
            val = model.eval(v, model_completion=True)
            diffs.append(v != val)
        return z3.Or(*diffs) if diffs else None

    def model_values(self, model: z3.ModelRef) -> dict[str, int]:
        """The model as {variable name: int} (booleans as bool); a variable
        the model leaves open reads 0 / False, as Z3's model completion
        would."""
        out: dict[str, int] = {}
        for name, v in self._vars.items():
            out[name] = False if z3.is_bool(v) else 0
        for d in model.decls():
            name = d.name()
            if name in out:
                got = int_value(model.get_interp(d))
                if got is not None:
                    out[name] = bool(got) if isinstance(out[name], bool) else got
        return out

    def decode(self, model: z3.ModelRef, rng: random.Random) -> AbstractInput:
        return self.decode_values(self.model_values(model), rng)

    def decode_values(self, values: dict[str, int], rng: random.Random) -> AbstractInput:
        """Like ``decode`` from an assignment ({name: value}, as
        ``model_values`` gives or the cheap sampler's mutations make)."""
        def iv(name: str, default: int = 0) -> int:
            got = values.get(name)
            return default if got is None else int(got)

        def bv(name: str) -> bool:
            return bool(values.get(name, False))

        args: dict[str, Any] = {}
        solved: list[str] = []
        tensors_shapes: list[tuple] = []
        for a in self.spec.args:
            if a.kind in (TENSOR, TENSOR_LIST):
                r = iv(f"{a.name}.rank")
                tensors_shapes.append(tuple(iv(f"{a.name}.d{i}") for i in range(r)))
        min_dim = min((d for s in tensors_shapes for d in s if d > 0), default=4)
        data = self._data_tensor()
        self._data_shape = tuple(iv(f"{data.name}.d{i}") for i in range(iv(f"{data.name}.rank"))) \
            if data is not None else None
        for a in self.spec.args:
            name = a.name
            if f"{name}.present" in self._vars and not bv(f"{name}.present"):
                continue
            value = self._decode_arg(a, iv, bv, rng, min_dim)
            if value is _OMIT:
                continue
            args[name] = value
            if a.kind not in (FLOAT, FLOAT_LIST, SCALAR, STR_LIST, BOOL_LIST, DTYPE_LIST) and \
                    not (a.kind == STR and not a.allowed):
                solved.append(name)
        return AbstractInput(api=self.spec.name, args=args, solved=solved,
                             origin={"source": "registry", "set": self.set_id})

    def _dtype_of(self, arg: str, iv) -> str:
        key = self._tensor_dtype_var[arg]
        allowed = self._dtype_sets[key]
        return allowed[min(max(iv(key), 0), len(allowed) - 1)]

    def _tensor(self, a: ArgSpec, dtype: str, shape: tuple, rng: random.Random, min_dim: int,
                iv=None) -> TensorDesc:
        k = dtype_kind(dtype)
        n_vars = self._value_vars.get(a.name, 0)
        if n_vars and iv is not None and k in ("i", "u", "f"):
            # elements that rules decide: solved, the rest filled in range
            n = int(math.prod(shape)) if shape else 1
            vals = [iv(f"{a.name}.v{i}") for i in range(min(n, n_vars))]
            vals += [rng.randint(0, 3) for _ in range(n - len(vals))]
            if k == "u":
                vals = [max(v, 0) for v in vals]
            if k == "f":
                vals = [float(v) for v in vals]
            if n <= 64:
                return TensorDesc(dtype, shape, None, None, tuple(vals))
        role = self._role_values(a, k, shape, rng)
        if role is not None:
            return TensorDesc(dtype, shape, *role)
        if k in ("i", "u"):
            choice = rng.random()
            if choice < 0.6:
                low, high = 0, max(min_dim - 1, 0)
            elif choice < 0.85 or k == "u":
                low, high = 0, 8
            else:
                low, high = -4, 4
            return TensorDesc(dtype, shape, low, high)
        if k in ("f", "c"):
            flow, fhigh = rng.choice(FLOAT_RANGES)
            if iv is not None and f"{a.name}.range" in self._vars:  # a rule names the range
                flow, fhigh = FLOAT_RANGES[min(max(iv(f"{a.name}.range"), 0), len(FLOAT_RANGES) - 1)]
            return TensorDesc(dtype, shape, flow, fhigh)
        return TensorDesc(dtype, shape)

    def _role_values(self, a: ArgSpec, k: str, shape: tuple, rng: random.Random):
        """(low, high, values) for an index-like integer tensor, or None."""
        data = getattr(self, "_data_shape", None)
        if k not in ("i", "u") or a.name not in _ROLE_NAMES or data is None or rng.random() < 0.15:
            return None
        r = len(data)
        n = int(math.prod(shape)) if shape else 1
        if a.name in _AXIS_TENSOR_NAMES:
            lo = 0 if k == "u" or rng.random() < 0.7 else -r
            return (lo, max(r - 1, lo), None)
        if a.name in _PERM_NAMES and n == r and r > 0:
            perm = list(range(r))
            rng.shuffle(perm)
            return (None, None, tuple(perm))
        if a.name in _PADDING_NAMES:
            return (0, 2, None)
        if a.name in ("shape", "new_shape", "out_shape", "output_shape") and n == r:
            return (None, None, tuple(data))
        if a.name in ("begin",):
            return (0, 1, None)
        if a.name in ("size", "end") and n == r:
            return (None, None, tuple(max(1, d - rng.randint(0, 1)) for d in data))
        return (1, 3, None)

    def _decode_arg(self, a: ArgSpec, iv, bv, rng: random.Random, min_dim: int):
        name, kind = a.name, a.kind
        if kind == TENSOR:
            shape = tuple(iv(f"{name}.d{i}") for i in range(iv(f"{name}.rank")))
            return self._tensor(a, self._dtype_of(name, iv), shape, rng, min_dim, iv)
        if kind == TENSOR_LIST:
            shape = tuple(iv(f"{name}.d{i}") for i in range(iv(f"{name}.rank")))
            n = iv(f"{name}.len")
            if a.dtype_ref or self._tensor_dtype_var[name] == "__group__.val" or not a.dtypes:
                dts = [self._dtype_of(name, iv)] * n
            else:
                allowed = [d for d in a.dtypes if d in BUILDABLE] or DEFAULT_DTYPES
                dts = [rng.choice(allowed) for _ in range(n)]
            return [self._tensor(a, dt, shape, rng, min_dim) for dt in dts]
        if kind == INT:
            return iv(f"{name}.val")
        if kind == BOOL:
            return bv(f"{name}.val")
        if kind == STR:
            if a.allowed:
                return a.allowed[min(max(iv(f"{name}.val"), 0), len(a.allowed) - 1)]
            if a.has_default:
                return a.default
            return rng.choice(["", "a", "abc"])
        if kind == DTYPE:
            key = f"{name}.val"
            allowed = self._dtype_sets[key]
            return DTypeValue(allowed[min(max(iv(key), 0), len(allowed) - 1)])
        if kind in (INT_LIST, SHAPE):
            return [iv(f"{name}.i{i}") for i in range(iv(f"{name}.len"))]
        if kind == FLOAT:
            if a.has_default and a.default is not None and rng.random() < 0.5:
                return float(a.default)
            return rng.choice([0.0, 0.5, 1.0, 1e-3, 2.0, -1.0, round(rng.uniform(-2, 2), 3)])
        if kind == SCALAR:
            return rng.choice([0, 1, 2, -1, 0.5, 1.0])
        if kind == FLOAT_LIST:
            n = a.length if a.length is not None else rng.randint(max(a.min_length, 0), 4)
            return [rng.choice([0.0, 0.5, 1.0, 2.0]) for _ in range(n)]
        if kind == BOOL_LIST:
            n = a.length if a.length is not None else rng.randint(max(a.min_length, 0), 4)
            return [rng.random() < 0.5 for _ in range(n)]
        if kind == STR_LIST:
            if a.has_default and a.default is not None:
                return list(a.default)
            return []
        if kind == DTYPE_LIST:
            if a.has_default and a.default is not None:
                return [DTypeValue(d) for d in a.default]
            n = max(a.min_length, 1)
            return [DTypeValue(rng.choice(DEFAULT_DTYPES)) for _ in range(n)]
        return _OMIT

    # -- cheap sampling (sampler.Sampler(cheap=True)) ---------------------------
    #: this problem supports model_values / decode_values / mutate
    cheap = True

    def _mutables(self) -> list[tuple]:
        """The variables a mutation may redraw, as (name, kind, lo, hi, gate,
        gate_index, present): dims (``gate`` the rank: active below it),
        list items (``gate`` the length), int values and the solved elements
        of small tensors. Ranks, lengths, presence, dtypes and enum codes are
        the structure and stay as Z3 chose them."""
        got = getattr(self, "_mut_cache", None)
        if got is not None:
            return got
        out: list[tuple] = []
        for a in self.spec.args:
            pres = f"{a.name}.present" if f"{a.name}.present" in self._vars else None
            if a.kind in (TENSOR, TENSOR_LIST):
                for i in range(MAX_RANK):
                    out.append((f"{a.name}.d{i}", "dim", 1, 64, f"{a.name}.rank", i, pres))
                for i in range(self._value_vars.get(a.name, 0)):
                    lo, hi = TENSOR_VALUE_RANGE
                    out.append((f"{a.name}.v{i}", "tval", lo, hi, None, 0, pres))
            elif a.kind == INT:
                lo, hi = self._int_bounds(a)
                kind = "axis" if a.name in _AXIS_NAMES else "count" if a.name in _COUNT_NAMES else "int"
                if a.allowed:
                    kind = "allowed"
                out.append((f"{a.name}.val", kind, lo, hi, None, 0, pres))
            elif a.kind in (INT_LIST, SHAPE):
                lo, hi = self._list_bounds(a)
                for i in range(MAX_LIST):
                    out.append((f"{a.name}.i{i}", "item", lo, hi, f"{a.name}.len", i, pres))
        self._mut_cache = out
        return out

    def _list_bounds(self, a: ArgSpec) -> tuple[int, int]:
        if a.name in _POSITIVE_LIST_NAMES:
            return 1, 4
        if a.kind == SHAPE:
            return -1, 8
        if a.name in _AXIS_NAMES:
            return -MAX_RANK, MAX_RANK - 1
        return (int(a.minimum) if a.minimum is not None else -2), 16

    def _structurals(self) -> list[tuple]:
        """The structural variables a mutation may also change, as (name,
        lo, hi, kind): tensor ranks, list lengths, dtype / enum codes,
        booleans and presence flags. Their bounds are the hard ones; what
        the formulas add is left to the checker."""
        got = getattr(self, "_struct_cache", None)
        if got is not None:
            return got
        out: list[tuple] = []
        for a in self.spec.args:
            if f"{a.name}.present" in self._vars:
                out.append((f"{a.name}.present", 0, 1, "bool"))
            if a.kind in (TENSOR, TENSOR_LIST):
                out.append((f"{a.name}.rank", max(0, a.min_rank), min(MAX_RANK, a.max_rank), "rank"))
                if a.kind == TENSOR_LIST and a.length is None:
                    out.append((f"{a.name}.len", max(a.min_length, 0), 6, "code"))
            elif a.kind in (INT_LIST, SHAPE) and a.length is None:
                out.append((f"{a.name}.len", max(0, a.min_length), MAX_LIST, "len"))
            elif a.kind == BOOL:
                out.append((f"{a.name}.val", 0, 1, "bool"))
            elif a.kind == STR and a.allowed:
                out.append((f"{a.name}.val", 0, len(a.allowed) - 1, "code"))
        for key, allowed in self._dtype_sets.items():
            out.append((key, 0, len(allowed) - 1, "code"))
        out = [m for m in out if m[0] in self._vars and m[2] > m[1]]
        self._struct_cache = out
        return out

    def _restructure(self, values: dict[str, int], rng, frozen) -> tuple[dict, list[str]] | None:
        """One structural variable of ``values`` set to another value of its
        range; dims or list items that become active are redrawn and those
        that become inactive reset to their fixed value."""
        opts = [m for m in self._structurals() if m[0] not in frozen]
        if not opts:
            return None
        name, lo, hi, kind = opts[int(rng.integers(len(opts)))]
        old = int(values[name])
        new = int(rng.integers(lo, hi))
        new = new + 1 if new >= old else new  # any value of [lo, hi] but old
        out = dict(values)
        out[name] = bool(new) if kind == "bool" else new
        changed = [name]
        base = name.rsplit(".", 1)[0]
        if kind in ("rank", "len"):
            muts = {m[0]: m for m in self._mutables()}
            stem, fixed = (f"{base}.d", 1) if kind == "rank" else (f"{base}.i", 0)
            for i in range(min(old, new), max(old, new)):
                v = f"{stem}{i}"
                if v not in out:
                    continue
                out[v] = self._redraw(muts[v], out, rng) if new > old and v in muts else fixed
                changed.append(v)
            if kind == "rank" and new > old:  # a higher rank has a lower dim cap
                cap = _dim_hi(new)
                for i in range(old):
                    v = f"{stem}{i}"
                    if v in out and out[v] > cap:
                        out[v] = self._redraw(muts[v], out, rng)
                        changed.append(v)
        return out, changed

    def structure_key(self, values: dict[str, int]) -> tuple:
        """The structural choice of an assignment: ranks, lengths, presence,
        dtype and enum codes (what mutations keep)."""
        muts = {m[0] for m in self._mutables()}
        return tuple((n, values[n]) for n in self._vars if n not in muts)

    def mutate(self, values: dict[str, int], rng, frozen=frozenset(), donor: dict | None = None):
        """A copy of ``values`` with a few active variables redrawn within
        their bounds (numpy ``rng``), or None when nothing can change. A
        variable is redrawn from its target distribution (half the time),
        moved by one or two (a quarter), or takes its value in ``donor``,
        another solved model (a quarter: values that satisfied the
        constraints once).
        Returns (new values, names changed). A redrawn variable carries
        along, with probability 3/4, the other active variables that had
        the same value, so equalities the solver found (matching dims,
        list length == rank items) survive. The caller checks the result."""
        if rng.random() < STRUCTURE_SHARE:
            got = self._restructure(values, rng, frozen)
            if got is not None:
                return got
        act = []
        for m in self._mutables():
            name, kind, lo, hi, gate, gi, pres = m
            if name in frozen or (pres is not None and not values[pres]):
                continue
            if gate is not None and values[gate] <= gi:
                continue
            act.append(m)
        if not act:
            return None
        k = min(int(rng.geometric(0.5)), len(act))
        picks = rng.choice(len(act), size=k, replace=False) if k > 1 else [int(rng.integers(len(act)))]
        out = dict(values)
        changed: list[str] = []
        for j in picks:
            m = act[int(j)]
            name = m[0]
            old = values[name]
            u = rng.random()
            if u < 0.5:
                new = self._redraw(m, out, rng)
            elif u < 0.75 or donor is None:
                step = int(rng.integers(1, 3)) * (1 if rng.random() < 0.5 else -1)
                new = int(min(max(old + step, m[2]), self._hi(m, out)))
            else:
                new = int(donor[name])
            out[name] = new
            changed.append(name)
            if new != old and rng.random() < 0.75:
                for o in act:
                    if o[0] != name and values[o[0]] == old and out[o[0]] == old \
                            and o[2] <= new <= self._hi(o, out):
                        out[o[0]] = new
                        changed.append(o[0])
        return out, changed

    def _hi(self, m: tuple, values: dict[str, int]) -> int:
        if m[1] == "dim":
            return _dim_hi(values[m[4]])
        return m[3]

    def _redraw(self, m: tuple, values: dict[str, int], rng) -> int:
        name, kind, lo, hi, gate, gi, pres = m
        u = rng.random()
        if kind == "dim":
            hi = _dim_hi(values[gate])
            if u < 0.8:
                vals, p = _dim_table(hi)
                return int(vals[int(np.searchsorted(p, rng.random(), side="right"))])
            return int(rng.integers(1, hi + 1))
        if kind == "allowed":
            allowed = self.spec.arg(name[:-4]).allowed or [lo]
            return int(allowed[int(rng.integers(len(allowed)))])
        if kind == "axis" and u < 0.8:
            ranks = [values[f"{a.name}.rank"] for a in self._tensor_args()]
            if ranks:
                r = ranks[int(rng.integers(len(ranks)))]
                if r > 0:
                    return int(min(max(int(rng.integers(-r, r)), lo), hi))
        if kind == "count" and u < 0.8:
            return int(min(max(_COUNT_PICKS[int(rng.integers(len(_COUNT_PICKS)))], lo), hi))
        if kind == "int" and u < 0.6:
            return int(min(max(_INT_PICKS[int(rng.integers(len(_INT_PICKS)))], lo), hi))
        if kind == "item" and u < 0.6:
            return int(min(max(_ITEM_PICKS[int(rng.integers(len(_ITEM_PICKS)))], lo), hi))
        if kind == "tval" and u < 0.8:
            return int(_TVAL_PICKS[int(rng.integers(len(_TVAL_PICKS)))])
        return int(rng.integers(lo, hi + 1))

    # -- Terms (for YAML rules) ------------------------------------------------
    def _need(self, name: str) -> z3.ExprRef:
        if name not in self._vars:
            raise KeyError(name.split(".")[0])
        return self._vars[name]

    def rank(self, arg):
        return self._need(f"{arg}.rank")

    def dim(self, arg, index):
        r = self._need(f"{arg}.rank")
        if index >= 0:
            return self._need(f"{arg}.d{index}")
        # negative: counts from the end (index + rank)
        expr = z3.IntVal(-1, self.ctx)
        for rr in range(MAX_RANK, 0, -1):
            pos = rr + index
            if pos >= 0:
                expr = z3.If(r == rr, self._vars[f"{arg}.d{pos}"], expr)
        return expr

    def length(self, arg):
        return self._need(f"{arg}.len")

    def tensor_value(self, arg, index):
        from .rules import RuleError
        a = self._arg(arg)
        if a.kind != TENSOR:
            raise RuleError(f"{arg} is not a tensor")
        if not 0 <= index < MAX_TENSOR_VALUES:
            raise RuleError(f"tensor elements 0..{MAX_TENSOR_VALUES - 1} only")
        for i in range(self._value_vars.get(arg, 0), index + 1):
            v = self._int(f"{arg}.v{i}")
            lo, hi = TENSOR_VALUE_RANGE
            self._hard += [v >= lo, v <= hi]
            self._value_vars[arg] = i + 1
        return self._vars[f"{arg}.v{index}"]

    def fill_range(self, arg, end, cmp, c):
        """``arg.low`` / ``arg.high`` compared with ``c``: the fill ranges of
        FLOAT_RANGES that satisfy it (a variable picks one for the tensor)."""
        from .rules import RuleError
        if self._arg(arg).kind != TENSOR:
            raise RuleError(f"{arg} is not a tensor")
        name = f"{arg}.range"
        if name not in self._vars:
            v = self._int(name)
            self._hard += [v >= 0, v < len(FLOAT_RANGES)]
        v = self._vars[name]
        k = 0 if end == "low" else 1
        ok = [v == i for i, r in enumerate(FLOAT_RANGES) if cmp(r[k], c)]
        return z3.Or(*ok) if ok else z3.BoolVal(False, self.ctx)

    def item(self, arg, index):
        if self._arg(arg).kind == TENSOR:
            return self.tensor_value(arg, index)
        if index >= 0:
            return self._need(f"{arg}.i{index}")
        n = self._need(f"{arg}.len")
        expr = z3.IntVal(0, self.ctx)
        for ln in range(MAX_LIST, 0, -1):
            pos = ln + index
            if pos >= 0:
                expr = z3.If(n == ln, self._vars[f"{arg}.i{pos}"], expr)
        return expr

    def value(self, arg):
        return self._need(f"{arg}.val")

    def enum_code(self, arg, literal):
        a = self._arg(arg)
        if a.kind == DTYPE:
            allowed = self._dtype_sets[f"{arg}.val"]
            return allowed.index(literal) if literal in allowed else None
        if a.allowed and literal in a.allowed:
            return a.allowed.index(literal)
        return None

    def dtype(self, arg):
        return self._need(self._tensor_dtype_var[arg])

    def dtype_code(self, arg, name):
        allowed = self._dtype_sets[self._tensor_dtype_var[arg]]
        return allowed.index(name) if name in allowed else None

    def present(self, arg):
        if f"{arg}.present" in self._vars:
            return self._vars[f"{arg}.present"]
        self._arg(arg)
        return z3.BoolVal(True, self.ctx)


class _Omit:
    pass


_OMIT = _Omit()
