"""Filling an ACETest input: solved values applied, the rest drawn at random.

:func:`fill_args` applies a model's values to the argument properties the way
upstream's ``apply_sample`` does and draws everything else the way upstream's
ArgumentValue classes do (its ranges, including its rare huge values). The
value of an argument, and of a list item, comes from a kind -> function table
(``VALUE_FILLERS``, ``ITEM_FILLERS``); all randomness comes from one
``random.Random``, drawn in a fixed order, so a seed gives the same input.
"""
from __future__ import annotations

import random
import string
from typing import TYPE_CHECKING, Any, Callable, Optional

from ..model import (
    ALL_DTYPES, BOOL, BOOL_LIST, DTYPE, DTYPE_LIST, FLOAT, FLOAT_LIST, INT, INT_LIST, LIST_KINDS,
    SCALAR, SHAPE, STR, STR_LIST, TENSOR, TENSOR_LIST, ArgSpec, DTypeValue, TensorDesc,
    canonical_dtype,
)
from .acetest_problem import (
    CODE_FMTS, CODE_PADDINGS, ITEM_MAX, MIN_ONE_ARGS, RANK_MAX, SOLVED_DIM_MAX, ArgExtra,
)

if TYPE_CHECKING:
    from .acetest_problem import AcetestProblem

# ---- upstream's random ranges ---------------------------------------------------------------
HOLE_DIM_MAX = 32         # a dimension a solved shape leaves open
FREE_DIM_MAX = 16         # dimensions of a shape nothing decided
RANDOM_LEN_MAX = 6        # list length filled at random
HUGE_VALUE = 2 ** 64 - 1
TENSOR_VALUE_RANGE = 2 ** 10
INT8_VALUE_RANGE = 2 ** 7
ZERO_PROB = 0.01
EDGE_PROB = 0.1

# upstream draws "any dtype" from its table of spellings (aliases weigh double)
_ANY_DTYPE_SPELLINGS = (
    "int8", "int16", "int", "int32", "int64", "half", "uint8", "uint16", "uint", "uint32",
    "uint64", "bfloat16", "float16", "float32", "float64", "double", "float", "complex64",
    "complex128", "complex", "string", "bool",
)
_STRING_CHARS = string.ascii_letters + string.digits + " \t'!@#$^&*-+/,.<>?;:|`~"

ANY_DTYPES: tuple[str, ...] = tuple(d for d in map(canonical_dtype, _ANY_DTYPE_SPELLINGS) if d)


def fill_args(problem: AcetestProblem, rng: random.Random, vals: dict, entries: dict,
              list_min_1: bool) -> tuple[dict[str, Any], list[str]]:
    """The arguments of one input (spec order) and the properties that came from
    the model. ``vals``: solved scalars by (arg, part); ``entries``: solved array
    entries by (arg, part) -> {index: value}; ``list_min_1``: the drawn variant's
    list items start at 1."""
    filler = Filler(problem, rng, vals, entries, list_min_1)
    args = filler.build()
    return args, filler.solved


class Filler:
    """Applies solved values to the argument properties and draws the rest the
    way upstream's ArgumentValue classes do. All randomness comes from ``rng``."""

    def __init__(self, problem: AcetestProblem, rng: random.Random, vals: dict, entries: dict,
                 list_min_1: bool):
        self.p = problem
        self.rng = rng
        self.vals = vals
        self.entries = entries
        self.list_min_1 = list_min_1
        self.solved: list[str] = []
        self.out: dict[str, Any] = {}
        #: our improvements beyond upstream (off: upstream's ArgumentValue rules)
        self.ext = bool(getattr(problem, "extensions", True))
        # upstream: 1% of the runs draw everything open with huge values
        self.large_prob = 1.0 if rng.random() < 0.01 else 0.01

    def p_(self, prob: float) -> bool:
        return self.rng.random() < prob

    def build(self) -> dict[str, Any]:
        spec = self.p.spec
        # dtype arguments first: tensors follow them
        for a in spec.args:
            if a.kind == DTYPE:
                self.out[a.name] = DTypeValue(self._dtype_choice(a))
        # then the ints that give list lengths (TF number attrs)
        length_refs = {a.length_ref for a in spec.args if a.length_ref}
        for a in spec.args:
            if a.name in length_refs and a.kind == INT:
                self.out[a.name] = self._value(a)
        for a in spec.args:
            if a.name not in self.out:
                self.out[a.name] = self._value(a)
        return {a.name: self.out[a.name] for a in spec.args}

    def _extra(self, name: str) -> ArgExtra:
        return self.p.extras.get(name) or ArgExtra()

    def _solved_val(self, arg: str, part: str) -> Optional[int]:
        return self.vals.get((arg, part))

    # dtypes
    def _dtype_choice(self, a: ArgSpec) -> str:
        ex = self._extra(a.name)
        if ex.dtype_choices:
            return self.rng.choice(ex.dtype_choices)
        allowed = [d for d in (a.allowed or []) if isinstance(d, str) and d in ALL_DTYPES]
        if allowed:
            return self.rng.choice(allowed)
        return self.rng.choice(ANY_DTYPES)

    def _tensor_dtype(self, a: ArgSpec) -> str:
        if a.dtype_ref:
            ref = self.out.get(a.dtype_ref)
            if isinstance(ref, DTypeValue):
                return ref.name
        if a.dtypes:
            return self.rng.choice(a.dtypes)
        return self.rng.choice(ANY_DTYPES)

    def _value(self, a: ArgSpec) -> Any:
        fill = VALUE_FILLERS.get(a.kind)
        return fill(self, a) if fill is not None else None

    # tensors
    def _tensor(self, a: ArgSpec, name: Optional[str] = None, extra: Optional[ArgExtra] = None,
                solved_ok: bool = True) -> TensorDesc:
        name = name or a.name
        ex = extra or self._extra(a.name)
        rng = self.rng
        dtype = self._tensor_dtype(a)
        rank_v = self._solved_val(name, "rank") if solved_ok else None
        dims = self.entries.get((name, "dims"), {}) if solved_ok else {}
        numel = self._solved_val(name, "numel") if solved_ok else None
        fixed_ndim = ex.ndim
        if fixed_ndim is None and a.min_rank == a.max_rank:
            fixed_ndim = a.min_rank
        if dtype == "string" and fixed_ndim == 0:
            fixed_ndim = None
        if rank_v is not None:
            rank = max(0, min(rank_v, RANK_MAX))
            self.solved.append(f"{name}.rank")
        elif fixed_ndim is not None:
            rank = fixed_ndim
        else:
            lo = a.min_rank
            mindim = self._solved_val(name, "mindim") if solved_ok else None
            if mindim is not None:
                lo = mindim
            elif name in self.p.min_dim_fixed:
                lo = self.p.min_dim_fixed[name]
            hi = a.max_rank
            rank = lo if hi <= lo else rng.randint(lo, hi)
        shape: list[int]
        # faithful: a dimension array of the formulas decides the shape even when
        # the model spells out none of its entries (upstream: every size open)
        bound = (not self.ext and solved_ok and self.p.constrained
                 and (name, "dims") in getattr(self.p, "arrays", ()))
        if dims or bound:
            shape = []
            any_solved = False
            for i in range(rank):
                v = dims.get(i)
                if v is None:
                    v = dims.get(i - rank)
                if v is not None and 0 <= v <= SOLVED_DIM_MAX:
                    shape.append(v)
                    any_solved = True
                else:
                    shape.append(rng.randint(0, HOLE_DIM_MAX))
            if any_solved:
                self.solved.append(f"{name}.shape")
        elif ex.shape is not None:
            shape = [int(v) if isinstance(v, int) else rng.randint(0, HOLE_DIM_MAX)
                     for v in ex.shape]
        else:
            shape = [rng.randint(0, FREE_DIM_MAX) for _ in range(rank)]
            if rank and self.p_(self.large_prob):
                shape[rng.randint(0, rank - 1)] = rng.randint(2 ** 32, HUGE_VALUE)
        if numel is not None and not self.ext:
            # upstream: a tensor whose rank is 1 (solved or fixed) gets its element
            # count as its shape, any other tensor with one element the shape [1]
            ndim_prop = min(rank_v, RANK_MAX) if rank_v is not None else ex.ndim
            if ndim_prop == 1:
                shape = [max(0, numel)]
                self.solved.append(f"{name}.shape")
            elif numel == 1:
                shape = [1]
                self.solved.append(f"{name}.shape")
        elif numel is not None and not dims:
            # a 1-d tensor gets its element count as its size (here only when no
            # dimension size was solved, so the input keeps its formulas)
            if len(shape) == 1:
                shape = [max(0, numel)]
                self.solved.append(f"{name}.shape")
            elif numel == 1:
                shape = [1] * len(shape)
                self.solved.append(f"{name}.shape")
        low: Optional[float]
        high: Optional[float]
        if dtype in ("bool", "string"):
            low = high = None
        else:
            rngv = INT8_VALUE_RANGE if "int8" in dtype else TENSOR_VALUE_RANGE
            low, high = -rngv, rngv
            if self.p_(ZERO_PROB):
                low = high = 0
            if self.p_(self.large_prob):
                low, high = -HUGE_VALUE, HUGE_VALUE
        values = None
        if isinstance(ex.value, list) and all(isinstance(x, int) for x in ex.value):
            values = tuple(ex.value)
        return TensorDesc(dtype=dtype, shape=tuple(int(x) for x in shape), low=low, high=high,
                          values=values)

    # scalars
    def _int(self, a: ArgSpec, solved_ok: bool = True, lo_override=None, hi_override=None) -> int:
        if not self.ext and a.allowed:
            # upstream: an int enum is chosen from, whatever was solved
            return self.rng.choice(list(a.allowed))
        if solved_ok:
            v = self._solved_val(a.name, "value")
            if v is not None:
                self.solved.append(a.name)
                return v if self.ext else self._mutate_int(v)
        ex = self._extra(a.name) if solved_ok else ArgExtra()
        if isinstance(ex.value, int) and not isinstance(ex.value, bool):
            return ex.value if self.ext else self._mutate_int(ex.value)
        if a.allowed:
            return self.rng.choice(list(a.allowed))
        return self._random_int(a.name, a.minimum if lo_override is None else lo_override,
                                a.maximum if hi_override is None else hi_override)

    def _random_int(self, name: Optional[str], minimum, maximum) -> int:
        rng = self.rng
        if name == "N" and maximum is None:
            maximum = 6
        if maximum is None:
            hi = 2 ** 63 - 1 if self.p_(self.large_prob) else ITEM_MAX
        else:
            hi = int(maximum)
        if hi > ITEM_MAX and not self.p_(EDGE_PROB):
            hi = ITEM_MAX
        if minimum is None:
            lo = -2 ** 63 if self.p_(self.large_prob) else -ITEM_MAX
        else:
            lo = int(minimum)
        if lo < -ITEM_MAX and not self.p_(EDGE_PROB):
            lo = -ITEM_MAX
        v = lo if hi <= lo else rng.randint(lo, hi)
        if self.p_(ZERO_PROB):
            v = 0
        if self.p_(self.large_prob):
            v = rng.randint(-HUGE_VALUE, HUGE_VALUE)
        return v

    def _mutate_int(self, v: int) -> int:
        """Upstream's mutations of an int value it was given: zero with 1%,
        a huge random value with the run's large-value probability."""
        if self.p_(ZERO_PROB):
            v = 0
        if self.p_(self.large_prob):
            v = self.rng.randint(-HUGE_VALUE, HUGE_VALUE)
        return v

    def _mutate_float(self, v: float) -> float:
        if self.p_(ZERO_PROB):
            v = 0.0
        if self.p_(self.large_prob):
            v = float(self.rng.randint(-HUGE_VALUE, HUGE_VALUE))
        return v

    def _float(self, a: ArgSpec, solved_ok: bool = True) -> float:
        if solved_ok:
            v = self._solved_val(a.name, "value")
            if v is not None:
                self.solved.append(a.name)
                return float(v) if self.ext else self._mutate_float(float(v))
        ex = self._extra(a.name)
        if isinstance(ex.value, (int, float)) and not isinstance(ex.value, bool):
            return float(ex.value) if self.ext else self._mutate_float(float(ex.value))
        return self._random_float(a.minimum, a.maximum)

    def _random_float(self, minimum, maximum) -> float:
        rng = self.rng
        hi = float(maximum) if maximum is not None else (2e64 if self.p_(self.large_prob) else 128.0)
        lo = float(minimum) if minimum is not None else (-2e64 if self.p_(self.large_prob) else -128.0)
        if self.p_(EDGE_PROB):
            v = lo
        elif self.p_(EDGE_PROB):
            v = hi
        else:
            v = rng.uniform(lo, hi)
        if self.p_(ZERO_PROB):
            v = 0.0
        if self.p_(self.large_prob):
            v = float(rng.randint(-HUGE_VALUE, HUGE_VALUE))
        return v

    def _bool(self, a: ArgSpec) -> bool:
        if not self.ext and a.name == "use_cudnn_on_gpu":
            return True   # upstream: always, whatever was solved
        v = self._solved_val(a.name, "value")
        if v is not None:
            self.solved.append(a.name)
            return bool(v)
        ex = self._extra(a.name)
        if isinstance(ex.value, bool):
            return ex.value
        if a.name == "use_cudnn_on_gpu":
            return True
        return bool(self.rng.randint(0, 1))

    def _string(self, a: ArgSpec) -> str:
        allowed = [v for v in (a.allowed or []) if isinstance(v, str)]
        fmt = self._solved_val(a.name, "fmt")
        if fmt is not None:
            for cand in CODE_FMTS.get(fmt, ()):
                if cand in allowed:
                    self.solved.append(a.name)
                    return cand
        v = self._solved_val(a.name, "value")
        if v is not None:
            if a.name == "padding":
                if v in CODE_PADDINGS:
                    self.solved.append(a.name)
                    return CODE_PADDINGS[v]
            elif allowed and 1 <= v <= len(allowed):
                self.solved.append(a.name)
                return allowed[v - 1]
        ex = self._extra(a.name)
        if isinstance(ex.value, str):
            return ex.value
        if allowed:
            return self.rng.choice(allowed)
        length = ex.str_length if ex.str_length is not None else self.rng.randint(0, 300)
        return "".join(self.rng.choice(_STRING_CHARS) for _ in range(length))

    # lists
    def _list(self, a: ArgSpec) -> list:
        rng = self.rng
        ex = self._extra(a.name)
        n = self._solved_val(a.name, "len")
        if n is not None:
            self.solved.append(f"{a.name}.length")
            n = max(0, min(n, 2 ** 10))
        elif a.length_ref and isinstance(self.out.get(a.length_ref), int):
            n = max(0, min(self.out[a.length_ref], 2 ** 10))
        elif a.length is not None:
            n = a.length
        else:
            lo = a.min_length
            hi = ex.max_len if ex.max_len is not None else RANDOM_LEN_MAX
            n = lo if hi <= lo else rng.randint(lo, hi)
        items = self.entries.get((a.name, "items"), {})
        fixed = ex.value if isinstance(ex.value, list) else None
        out: list = []
        any_solved = False
        for i in range(n):
            v = items.get(i)
            if v is not None and a.kind in (INT_LIST, SHAPE, BOOL_LIST):
                if a.kind == BOOL_LIST:
                    out.append(bool(v))
                else:
                    out.append(v if self.ext else self._mutate_int(v))
                any_solved = True
                continue
            if fixed is not None and i < len(fixed) and fixed[i] is not None:
                x = fixed[i]
                if not self.ext and a.kind in (INT_LIST, SHAPE) and isinstance(x, int) \
                        and not isinstance(x, bool):
                    x = self._mutate_int(x)
                out.append(x)
                continue
            out.append(self._item(a, i))
        if any_solved:
            self.solved.append(f"{a.name}.items")
        return out

    # list items, by list kind
    def _int_item(self, a: ArgSpec, i: int) -> int:
        lo, hi = a.minimum, a.maximum
        if self.p.constrained:
            # upstream pins every list's item bounds when it has constraints
            if a.name in self.p.list_min_fixed:
                lo = self.p.list_min_fixed[a.name]
            elif a.name in MIN_ONE_ARGS:
                lo = 1
            else:
                lo = 1 if self.list_min_1 else 0
            hi = self.p.list_max_fixed.get(a.name, ITEM_MAX)
        elif lo is None and a.kind == INT_LIST and self._extra(a.name).child_type is None:
            lo = 0   # upstream: items without a type are ints >= 0
        return self._random_int(None, lo, hi)

    def _float_item(self, a: ArgSpec, i: int) -> float:
        return self._random_float(a.minimum, a.maximum)

    def _bool_item(self, a: ArgSpec, i: int) -> bool:
        return bool(self.rng.randint(0, 1))

    def _str_item(self, a: ArgSpec, i: int) -> str:
        allowed = [v for v in (a.allowed or []) if isinstance(v, str)]
        if allowed:
            return self.rng.choice(allowed)
        return "".join(self.rng.choice(_STRING_CHARS) for _ in range(self.rng.randint(0, 300)))

    def _dtype_item(self, a: ArgSpec, i: int) -> DTypeValue:
        allowed = [d for d in (a.allowed or []) if d in ALL_DTYPES]
        return DTypeValue(self.rng.choice(allowed or list(ANY_DTYPES)))

    def _tensor_item(self, a: ArgSpec, i: int) -> TensorDesc:
        return self._tensor(a, name=f"{a.name}[{i}]", solved_ok=False)

    def _item(self, a: ArgSpec, i: int) -> Any:
        fill = ITEM_FILLERS.get(a.kind)
        return fill(self, a, i) if fill is not None else None


#: argument kind -> the function that fills an argument of that kind (kinds not
#: listed get None; dtype arguments are drawn first, by ``_dtype_choice``)
VALUE_FILLERS: dict[str, Callable[[Filler, ArgSpec], Any]] = {
    TENSOR: Filler._tensor,
    **{k: Filler._list for k in LIST_KINDS},
    INT: Filler._int,
    FLOAT: Filler._float,
    SCALAR: Filler._float,
    BOOL: Filler._bool,
    STR: Filler._string,
}

#: list kind -> the function that draws item ``i`` of a list of that kind
ITEM_FILLERS: dict[str, Callable[[Filler, ArgSpec, int], Any]] = {
    INT_LIST: Filler._int_item,
    SHAPE: Filler._int_item,
    FLOAT_LIST: Filler._float_item,
    BOOL_LIST: Filler._bool_item,
    STR_LIST: Filler._str_item,
    DTYPE_LIST: Filler._dtype_item,
    TENSOR_LIST: Filler._tensor_item,
}
