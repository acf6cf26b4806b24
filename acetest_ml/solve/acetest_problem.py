"""ACETest's extracted constraint files as a :class:`Problem`.

One :class:`AcetestProblem` is one constraint set of one API: the conjunction
of one ``compute_*.z3`` and one ``constructor_*.z3`` file of its kernel (or of
one of them, or of none for an API that only has an op_json).  It follows the
semantics of the upstream ACETest Tester:

* the SMT-LIB2 files are parsed as they are (64-bit bit-vectors and
  bit-vector arrays); ``model-add`` / ``model-del`` forms are dropped first;
* assertions that are not connected (through shared variables) to any
  ``ARGNAME_<arg>_NAMEEND...`` variable are dropped;
* variables are bound to arguments by their suffix (rank, dimension array,
  element count, list length, item array, value, data-format code, ...);
* default bounds are added for what the formulas leave open: ranks 0..6, list
  lengths 0..10 (0..6 when only the items are used), ints ``|x| < 1024`` or
  ``< 65536`` (chosen per draw), ``dim``/``dimension`` 0..6, every referenced
  dimension size in ``[m, 16]`` with a minimum ``m`` of 0 or 1 and every
  referenced list item in ``[m, 128]`` (chosen per draw, the four upstream
  variants), element counts 0..5;
* a model is applied to the argument properties the way upstream's
  ``apply_sample`` does and everything else is filled at random (upstream's
  ranges, including its rare huge values) by :meth:`AcetestProblem.decode`
  through :mod:`acetest_ml.solve.fill`.

The default is faithful to upstream's Tester: four goal variants per
constraint set (minimum dimension 0/1 x list minimum 0/1, upstream's last two
being the same), each its own set; the int range and the "huge rank" choice
drawn once per set; models enumerated the way upstream's ``all_smt`` does
(block one argument term, fix the ones before it, depth first) with model
compaction off (``solver_params``); array arguments read from the model's
explicit entries only, as unsigned numbers at indices 0..20; solved ints,
floats and list items go through the random zero/huge mutations; an int enum
is chosen from whatever was solved; a tensor with an element count gets
``[count]`` when its rank is 1 and ``[1]`` when the count is 1.

``extensions=True`` (``--acetest-extensions``) keeps our improvements instead:
the variant and random equality targets drawn per draw, a whole-model block,
every read of an array evaluated as a signed number (negative dimension
indices resolved as ``index + rank``), solved values never mutated (so every
input satisfies its formulas), an element count of 1 giving all-ones dims of
the solved rank. In both modes a ``padding``/enum string code is bound to the
enum's codes and quantized dtypes are dropped (the data model has none).
"""
from __future__ import annotations

import copy
import random
import re
from dataclasses import dataclass
from typing import Any, Iterator, Optional, Sequence

import z3

from ..model import (
    BOOL, DTYPE, FLOAT, INT, LIST_KINDS, SCALAR, STR, TENSOR, AbstractInput, ApiSpec, ArgSpec,
    TensorDesc,
)
from .problem import Problem, int_value, limit
from .z3walk import collect, keep_interesting

BV_WIDTH = 64

# ---- upstream's default bounds (the random ranges of what stays open are in fill) ---------
RANK_MAX = 6
SOLVED_DIM_MAX = 16       # bound on every referenced dimension size
LEN_MAX = 10              # list length when the length is referenced
ITEMS_ONLY_LEN_MAX = 6    # list length when only the items are referenced
NUMEL_LIMIT = 6           # element counts are in [0, 6)
ITEM_MAX = 128            # list items
SMALL_INT = 1024
LARGE_INT = 2 ** 16
BIG_RANK = 2 ** 16        # upstream's rare "rank > 65536" bound (clipped to 6 when applied)
BIG_RANK_PROB = 0.2
MIN_ONE_ARGS = ("ksize", "strides")   # items / dims of these start at 1
DIM_VALUE_ARGS = ("dim", "dimension")  # ints bounded to 0..6
BLOCK_INDEX_LIMIT = 20                 # array entries upstream reads and blocks
#: upstream's goal variants per constraint set: (dimension sizes >= 1, list items >= 1);
#: its fourth goal repeats the third
GOAL_VARIANTS = ((False, False), (True, False), (True, True), (True, True))
#: z3 settings of upstream's sampling solver (faithful mode)
FAITHFUL_SOLVER_PARAMS = {"model.compact": False}

# data_format codes and padding codes used by the extracted formulas
FMT_CODES = {"NHWC": 0, "NDHWC": 0, "NCHW": 1, "NCDHW": 1, "NCHW_VECT_C": 2,
             "NHWC_VECT_W": 3, "HWNC": 4, "HWCN": 5}
CODE_FMTS = {0: ("NHWC", "NDHWC"), 1: ("NCHW", "NCDHW"), 2: ("NCHW_VECT_C",),
             3: ("NHWC_VECT_W",), 4: ("HWNC",), 5: ("HWCN",)}
PADDING_CODES = {"VALID": 1, "SAME": 2, "EXPLICIT": 3}
CODE_PADDINGS = {v: k for k, v in PADDING_CODES.items()}

# ACETest dtype spellings with no counterpart in the data model
QUANTIZED = ("qint8", "qint16", "qint32", "quint8", "quint16")

# ---- variable names ------------------------------------------------------------------------
_VAR_RE = re.compile(r"^ARGNAME_(.*)_NAMEEND(.*)$")
KNOWN_SUFFIXES = ("", "_DIM", "_DIMSIZE", "_NUMELEMENT", "_MINDIM", "_LEN", "_VAL", "_LIST_MIN",
                  "_LIST_MAX", "_ITERATOR_VAL", "_STRFMT", "_SCALAR", "_SHAPE")


def split_var(name: str) -> Optional[tuple[str, str]]:
    """``ARGNAME_<arg>_NAMEEND<suffix>`` -> (arg, suffix); None for internal names."""
    m = _VAR_RE.match(name)
    if m is None:
        return None
    return m.group(1), m.group(2)


# what each suffix means for each kind of argument (part names used below)
_TENSOR_PARTS = {"_DIM": "rank", "_DIMSIZE": "dims", "_NUMELEMENT": "numel", "_MINDIM": "mindim"}
_LIST_PARTS = {"_LEN": "len", "_NUMELEMENT": "len", "_VAL": "items", "_ITERATOR_VAL": "iter",
               "_LIST_MIN": "lmin", "_LIST_MAX": "lmax"}
_VALUE_PARTS = {"": "value", "_SCALAR": "value"}
_STR_PARTS = {"": "value", "_STRFMT": "fmt"}


def parts_for_kind(kind: str) -> dict[str, str]:
    if kind == TENSOR:
        return _TENSOR_PARTS
    if kind in LIST_KINDS:
        return _LIST_PARTS
    if kind == STR:
        return _STR_PARTS
    if kind in (INT, FLOAT, BOOL, DTYPE, SCALAR):
        return _VALUE_PARTS
    return {}


def _bv(v: int, ctx: z3.Context) -> z3.BitVecNumRef:
    return z3.BitVecVal(v, BV_WIDTH, ctx)


_signed = int_value  # z3 value -> signed Python int (None if not a value)


def explicit_entries(model: z3.ModelRef, arr: z3.ExprRef) -> list[tuple[int, int]]:
    """(index, value) of the entries a model's array value spells out (its
    chain of stores, outermost first), both read as unsigned numbers, as
    upstream reads them; a constant array or a function interpretation has
    none."""
    try:
        v = model[arr]
    except z3.Z3Exception:
        return []
    out: list[tuple[int, int]] = []
    while v is not None and z3.is_app(v) and z3.is_store(v):
        ch = v.children()
        if z3.is_bv_value(ch[1]) and z3.is_bv_value(ch[2]):
            out.append((ch[1].as_long(), ch[2].as_long()))
        v = ch[0]
    # (a reader that stores these in order keeps the innermost value of a
    # repeated index, as upstream's walk does)
    return out


# ---- per-argument properties beyond ArgSpec --------------------------------------------------
@dataclass
class ArgExtra:
    """op_json properties that ArgSpec has no field for."""

    shape: Optional[list] = None        # tensor: fixed shape (items may be None)
    ndim: Optional[int] = None          # tensor: fixed rank
    value: Any = None                   # fixed value (tensor elements, list items, scalar)
    max_len: Optional[int] = None       # list: upper bound of a random length
    child_type: Optional[str] = None    # list: op_json type of the items
    str_length: Optional[int] = None    # string: fixed length
    dtype_choices: Optional[list] = None  # dtype choices with upstream weights (any dtype)




@dataclass
class _Select:
    arg: Optional[str]      # bound argument (None for arrays of unknown arguments)
    part: str               # "dims" | "items"
    term: z3.ExprRef        # (select A idx)
    index: z3.ExprRef


class AcetestProblem(Problem):
    #: random equalities per draw (more spread, but more unsat retries)
    max_spread_targets = 3

    """One ACETest constraint set of one API (see the module docstring).

    ``parts`` is a list of (file stem, assertions); ``extras`` maps argument
    names to their :class:`ArgExtra`; ``aliases`` maps names used in the
    formulas (``input_0``) to argument names.
    """

    def __init__(self, spec: ApiSpec, parts: Sequence[tuple[str, Sequence[z3.BoolRef]]] = (), *,
                 extras: Optional[dict[str, ArgExtra]] = None,
                 aliases: Optional[dict[str, str]] = None,
                 set_id: Optional[str] = None, analyse_timeout_ms: int = 3000,
                 extensions: bool = False):
        self.spec = spec
        #: our improvements beyond upstream (see the module docstring); off: faithful
        self.extensions = bool(extensions)
        #: z3 settings the sampler applies to this problem's solver
        self.solver_params: dict[str, Any] = {} if extensions else dict(FAITHFUL_SOLVER_PARAMS)
        #: faithful: models are enumerated as upstream's all_smt does
        self.enumeration: Optional[str] = None if extensions else "all_smt"
        #: faithful: this set's goal variant (None until :meth:`variants`)
        self.variant: Optional[tuple[bool, bool]] = None
        #: faithful: the int range / huge rank choices, drawn once per set
        self._set_draws: Optional[list] = None
        self.extras = dict(extras or {})
        self.aliases = dict(aliases or {})
        self.files = [name for name, _ in parts]
        self.set_id = set_id or ("+".join(self.files) if self.files else "op_json")
        self._args = {a.name: a for a in spec.args}
        # a private context, filled only from this problem's own files: the
        # solver's choices depend on the context's history, so sharing one
        # (z3's main context, or parsed terms cached across the APIs that share
        # a kernel) would make a seed's inputs depend on what ran before
        self.ctx = z3.Context()
        raw = [a for _, part in parts for a in self._own_terms(part)]
        per, consts, selects = collect(raw)
        # every argument variable and every select on an argument array sits in
        # an assertion that is kept, so the traversal serves both steps
        self._core = keep_interesting(raw, per) if raw else []
        self._ext: list[z3.BoolRef] = []
        self.constrained = bool(self._core)
        self.created: set[tuple[str, str]] = set()
        self.list_min_fixed: dict[str, int] = {}
        self.list_max_fixed: dict[str, int] = {}
        self.min_dim_fixed: dict[str, int] = {}
        self.int_selectors: dict[str, z3.BoolRef] = {}
        self.bigrank_selectors: dict[str, z3.BoolRef] = {}
        self.target_ranges: list[tuple[z3.ExprRef, list[int]]] = []
        self._stage3: Optional[list] = None
        self._lits: dict = {}
        self._bind(consts, selects)
        if self.constrained:
            self._extend(analyse_timeout_ms)

    def _own_terms(self, part) -> list[z3.BoolRef]:
        """Assertions in this problem's context: SMT-LIB2 text is parsed into
        it, terms of another context are translated."""
        if isinstance(part, str):
            return list(z3.parse_smt2_string(part, ctx=self.ctx))
        return [a.translate(self.ctx) for a in part]

    # ---- binding variables to arguments ----
    def _arg_of(self, name: str) -> Optional[str]:
        name = self.aliases.get(name, name)
        return name if name in self._args else None

    def _bind(self, consts: dict, selects: list) -> None:
        self.scalars: dict[tuple[str, str], z3.ExprRef] = {}
        extra_eqs: list[z3.BoolRef] = []
        arrays: dict[str, tuple[Optional[str], str]] = {}
        for name in sorted(consts):
            c = consts[name]
            sp = split_var(name)
            if sp is None:
                continue
            raw_arg, suffix = sp
            arg = self._arg_of(raw_arg)
            if arg is None:
                # arrays of unknown arguments still get upstream's bounds
                if suffix == "_DIMSIZE":
                    arrays[name] = (None, "dims")
                elif suffix == "_VAL":
                    arrays[name] = (None, "items")
                continue
            part = parts_for_kind(self._args[arg].kind).get(suffix)
            if part is None:
                continue
            if part in ("dims", "items"):
                if z3.is_array(c):
                    arrays[name] = (arg, part)
                continue
            if z3.is_array(c) or not z3.is_bv(c):
                continue
            key = (arg, part)
            if key in self.scalars:
                extra_eqs.append(self.scalars[key] == c)
            else:
                self.scalars[key] = c
        self._core = self._core + extra_eqs
        self.selects: list[_Select] = []
        for t in selects:
            aname = t.arg(0).decl().name()
            if aname in arrays:
                arg, part = arrays[aname]
                self.selects.append(_Select(arg, part, t, t.arg(1)))
        self.arrays: set[tuple[str, str]] = {(arg, part) for arg, part in arrays.values()
                                             if arg is not None}

    def _array_terms(self) -> list[tuple[z3.ExprRef, tuple[str, str]]]:
        """The argument arrays (dimension sizes, list items) of the formulas."""
        out = []
        seen = set()
        for s in self.selects:
            if s.arg is None:
                continue
            arr = s.term.arg(0)
            name = arr.decl().name()
            if name not in seen:
                seen.add(name)
                out.append((arr, (s.arg, s.part)))
        return out

    def _var(self, arg: str, suffix: str) -> z3.ExprRef:
        return z3.BitVec(f"ARGNAME_{arg}_NAMEEND{suffix}", BV_WIDTH, self.ctx)

    # ---- upstream's default bounds ----
    def _extend(self, analyse_timeout_ms: int) -> None:
        ext: list[z3.BoolRef] = []
        self.sel_mindim1 = z3.Bool("__acetest_min_dim_1", self.ctx)
        self.sel_listmin1 = z3.Bool("__acetest_list_min_1", self.ctx)
        S = self.scalars
        arrays_with = {a for a, p in self.arrays}
        # 1. ranks, lengths, formats, values, element counts
        for (arg, part), c in list(S.items()):
            spec = self._args[arg]
            if part == "rank":
                ext += [c >= 0, c <= RANK_MAX]
                self.target_ranges.append((c, list(range(RANK_MAX + 1))))
            elif part == "len":
                ext += [c >= 0, c <= LEN_MAX]
                self.target_ranges.append((c, list(range(LEN_MAX + 1))))
            elif part == "fmt":
                codes = sorted({FMT_CODES[v] for v in (spec.allowed or []) if v in FMT_CODES})
                if codes:
                    ext.append(z3.Or([c == _bv(k, self.ctx) for k in codes]))
                    self.target_ranges.append((c, codes))
            elif part == "value":
                if spec.kind == STR:
                    codes = self._string_codes(spec)
                    if codes:
                        ext.append(z3.Or([c == _bv(k, self.ctx) for k in codes]))
                        self.target_ranges.append((c, codes))
                elif spec.kind == BOOL:
                    ext.append(z3.Or(c == _bv(0, self.ctx), c == _bv(1, self.ctx)))
                    self.target_ranges.append((c, [0, 1]))
                elif spec.kind == INT:
                    if arg in DIM_VALUE_ARGS:
                        ext += [c >= 0, c <= RANK_MAX]
                        self.target_ranges.append((c, list(range(RANK_MAX + 1))))
                    else:
                        sel = z3.Bool(f"__acetest_small_int_{arg}", self.ctx)
                        self.int_selectors[arg] = sel
                        ext.append(z3.If(sel, z3.And(c < SMALL_INT, c > -SMALL_INT),
                                         z3.And(c < LARGE_INT, c > -LARGE_INT)))
                        self.target_ranges.append((c, list(range(-2, 17)) + [32, 64, 100, 128]))
            elif part == "numel":
                ext += [c >= 0, c < NUMEL_LIMIT]
        # a dimension array without a rank variable: upstream adds one
        for arg in sorted(arrays_with):
            spec = self._args[arg]
            if spec.kind == TENSOR and (arg, "rank") not in S:
                d = self._var(arg, "_DIM")
                S[(arg, "rank")] = d
                self.created.add((arg, "rank"))
                sel = z3.Bool(f"__acetest_big_rank_{arg}", self.ctx)
                self.bigrank_selectors[arg] = sel
                ext += [d >= 0, z3.If(sel, d > BIG_RANK, d <= RANK_MAX)]
            elif spec.kind in LIST_KINDS and (arg, "len") not in S:
                ln = self._var(arg, "_LEN")
                S[(arg, "len")] = ln
                self.created.add((arg, "len"))
                ext += [ln >= 0, ln <= ITEMS_ONLY_LEN_MAX]
                self.target_ranges.append((ln, list(range(ITEMS_ONLY_LEN_MAX + 1))))
        # 2. what upstream derives with an optimiser before bounding dims and items
        # (run with loose dimension / item bounds, which the final ones only tighten:
        # without any bound on dimension sizes some formulas take z3 minutes)
        loose: list[z3.BoolRef] = []
        for s in self.selects:
            hi = SOLVED_DIM_MAX if s.part == "dims" else ITEM_MAX
            loose += [s.term >= 0, s.term <= hi]
        self._solver = z3.Solver(ctx=self.ctx)
        limit(self._solver, analyse_timeout_ms)
        self._solver.add(self._core)
        self._solver.add(ext)
        self._solver.add(loose)
        n_stage1 = len(ext)
        for (arg, part), c in S.items():
            if part not in ("iter", "numel"):
                continue
            lo, hi = self._optimise(ext, c, want_max=(part == "iter"), timeout_ms=analyse_timeout_ms)
            if part == "iter":
                if lo is not None and lo > -ITEM_MAX:
                    self.list_min_fixed[arg] = lo
                if hi is not None and hi < ITEM_MAX:
                    self.list_max_fixed[arg] = hi
            elif lo is not None and lo > 0:
                self.min_dim_fixed[arg] = lo
        # 3. dimension sizes and list items (four upstream variants through two selectors)
        ext.append(z3.Implies(self.sel_listmin1, self.sel_mindim1))
        for s in self.selects:
            t = s.term
            if s.part == "dims":
                if s.arg is not None and s.arg in self.min_dim_fixed:
                    lo = _bv(self.min_dim_fixed[s.arg], self.ctx)
                elif s.arg in MIN_ONE_ARGS:
                    lo = _bv(1, self.ctx)
                else:
                    lo = z3.If(self.sel_mindim1, _bv(1, self.ctx), _bv(0, self.ctx))
                ext += [t >= lo, t <= SOLVED_DIM_MAX]
            else:
                hi = self.list_max_fixed.get(s.arg, ITEM_MAX) if s.arg else ITEM_MAX
                if s.arg is not None and s.arg in self.list_min_fixed:
                    lo = _bv(self.list_min_fixed[s.arg], self.ctx)
                elif s.arg in MIN_ONE_ARGS:
                    lo = _bv(1, self.ctx)
                else:
                    lo = z3.If(self.sel_listmin1, _bv(1, self.ctx), _bv(0, self.ctx))
                ext += [t >= lo, t <= hi]
        # 4. negative dimension indices count from the end: tie A[-k] to A[rank-k]
        for arg in sorted(arrays_with):
            if self._args[arg].kind != TENSOR:
                continue
            arr = z3.Array(f"ARGNAME_{arg}_NAMEEND_DIMSIZE", z3.BitVecSort(BV_WIDTH, self.ctx),
                           z3.BitVecSort(BV_WIDTH, self.ctx))
            r = S[(arg, "rank")]
            for k in range(1, RANK_MAX + 1):
                ext.append(z3.Implies(r >= k, arr[_bv(-k, self.ctx)] == arr[r - k]))
        self._ext = ext
        self._stage3 = ext[n_stage1:]

    def satisfiable(self, timeout_ms: int = 30000) -> z3.CheckSatResult:
        """Whether the formulas (with the default bounds) have a model."""
        if not self._core:
            return z3.sat
        s = self._solver
        if self._stage3 is not None:
            s.add(self._stage3)
            self._stage3 = None
        limit(s, timeout_ms)
        return s.check()

    def _string_codes(self, spec: ArgSpec) -> list[int]:
        allowed = [v for v in (spec.allowed or []) if isinstance(v, str)]
        if spec.name == "padding":
            return sorted({PADDING_CODES[v] for v in allowed if v in PADDING_CODES})
        return list(range(1, len(allowed) + 1))

    def _optimise(self, ext, c, *, want_max: bool, timeout_ms: int):
        """Upstream's optimiser results (read as unsigned numbers) for ``c``:
        (minimum, maximum or None when it is >= 128). Cheap checks first."""
        s = self._solver
        lo_v: Optional[int] = None
        if not getattr(self, "_warm", False):
            self._warm = True
            limit(s, max(timeout_ms, 30000))
            r = s.check()
            limit(s, timeout_ms)
            if r != z3.sat:     # unsat or too hard: upstream would get nothing either
                return None, None
        if want_max:
            r0 = s.check(c == _bv(0, self.ctx))
            if r0 == z3.sat:
                lo_v = 0
            big = s.check(z3.UGE(c, _bv(ITEM_MAX, self.ctx)))
            if r0 == z3.unknown or (r0 == z3.sat and big != z3.unsat):
                return lo_v, None   # maximum >= 128 (or too hard): upstream keeps no bound
        else:
            for v in range(NUMEL_LIMIT):
                r = s.check(c == _bv(v, self.ctx))
                if r == z3.sat:
                    return v, None
                if r == z3.unknown:
                    break
            else:
                return None, None
        return self._optimise_slow(ext, c, want_max=want_max, timeout_ms=timeout_ms)

    def _optimise_slow(self, ext, c, *, want_max: bool, timeout_ms: int):
        opt = z3.Optimize(ctx=self.ctx)
        limit(opt, timeout_ms)
        opt.set("priority", "box")
        opt.add(self._core)
        opt.add(ext)
        lo_h = opt.minimize(c)
        hi_h = opt.maximize(c) if want_max else None
        try:
            if opt.check() != z3.sat:
                return None, None
            lo = lo_h.value()
            hi = hi_h.value() if hi_h is not None else None
        except z3.Z3Exception:
            return None, None
        # upstream reads the optimum as an unsigned number
        lo_v = lo.as_long() if z3.is_bv_value(lo) else None
        hi_v = hi.as_long() if hi is not None and z3.is_bv_value(hi) else None
        return lo_v, hi_v

    # ---- Problem interface ----
    def formulas(self) -> list[z3.BoolRef]:
        return list(self._core) + list(self._ext) + self._variant_lits()

    def _variant_lits(self) -> list[z3.BoolRef]:
        if self.variant is None or not self.constrained:
            return []
        md1, lm1 = self.variant
        return [self.sel_mindim1 == z3.BoolVal(md1, self.ctx),
                self.sel_listmin1 == z3.BoolVal(lm1, self.ctx)]

    def variants(self, timeout_ms: int = 30000) -> list["AcetestProblem"]:
        """Upstream's four goals of this constraint set, the unsatisfiable ones
        left out (faithful mode); ``[self]`` with extensions or without
        constraints."""
        if self.extensions or not self.constrained:
            return [self]
        self.satisfiable(timeout_ms)   # the stage-3 bounds are on the shared solver now
        out: list[AcetestProblem] = []
        for k, v in enumerate(GOAL_VARIANTS):
            p = copy.copy(self)
            p.variant = v
            p.set_id = f"{self.set_id}#v{k}"
            p._set_draws = None
            p.__dict__.pop("_last_solved", None)
            p.__dict__.pop("_enum_terms", None)
            limit(self._solver, timeout_ms)
            if self._solver.check(*p._variant_lits()) == z3.unsat:
                continue
            out.append(p)
        return out

    def core_formulas(self) -> list[z3.BoolRef]:
        """The extracted formulas alone (no default bounds)."""
        return list(self._core)

    def random_targets(self, rng: random.Random) -> list[z3.BoolRef]:
        if not self.constrained:
            return []
        if not self.extensions:
            return self.set_draws(rng)
        out: list[z3.BoolRef] = []
        variant = rng.randrange(4)   # upstream's four (min dim, list min) variants
        out.append(self._lit(self.sel_mindim1, variant > 0))
        out.append(self._lit(self.sel_listmin1, variant >= 2))
        for arg in sorted(self.int_selectors):
            out.append(self._lit(self.int_selectors[arg], rng.random() < 0.5))
        for arg in sorted(self.bigrank_selectors):
            out.append(self._lit(self.bigrank_selectors[arg],
                                 rng.random() < BIG_RANK_PROB))
        spread: list[z3.BoolRef] = []
        for c, values in self.target_ranges:
            if rng.random() < 0.5:
                spread.append(self._lit(c, rng.choice(values)))
        for s in self.selects:
            if s.arg is not None and rng.random() < 0.3:
                hi = SOLVED_DIM_MAX if s.part == "dims" else 16
                spread.append(self._lit(s.term, rng.randint(1, hi)))
        rng.shuffle(spread)
        return out + spread[:self.max_spread_targets]

    def set_draws(self, rng: random.Random) -> list[z3.BoolRef]:
        """Faithful mode: upstream's per-set random bounds (each int argument's
        range |x| < 65536 or < 1024, each created rank "huge" with 20%), drawn
        on the set's first draw and kept for every later one."""
        if self._set_draws is None:
            out: list[z3.BoolRef] = []
            for arg in sorted(self.int_selectors):
                out.append(self._lit(self.int_selectors[arg], rng.random() < 0.5))
            for arg in sorted(self.bigrank_selectors):
                out.append(self._lit(self.bigrank_selectors[arg], rng.random() < BIG_RANK_PROB))
            self._set_draws = out
        return list(self._set_draws)

    # ---- upstream's model enumeration (faithful mode) ----
    def enum_terms(self) -> list[z3.ExprRef]:
        """The argument variables in the order they first occur in the
        formulas: the terms upstream's all_smt blocks and fixes."""
        if getattr(self, "_enum_terms", None) is None:
            _, consts, _ = collect(self.formulas())
            terms = []
            for name, c in consts.items():
                sp = split_var(name)
                if sp is not None and self._arg_of(sp[0]) is not None:
                    terms.append(c)
            self._enum_terms = terms
        return list(self._enum_terms or [])

    def _block_term(self, solver: z3.Solver, m: z3.ModelRef, t: z3.ExprRef) -> None:
        if z3.is_array(t):
            for idx, _ in explicit_entries(m, t):
                if idx <= BLOCK_INDEX_LIMIT:
                    sel = t[_bv(idx, self.ctx)]
                    solver.add(sel != m.eval(sel, model_completion=True))
        else:
            solver.add(t != m.eval(t, model_completion=True))

    def enumerate_models(self, solver: z3.Solver) -> Iterator[z3.ModelRef]:
        """Models in upstream's all_smt order: the first model; then, depth
        first, for each term k from the frame's own start: block term k of the
        frame's model, fix the terms before it (from the frame's start) to it,
        and enumerate below with terms k.. ."""
        terms = self.enum_terms()
        n = len(terms)
        if solver.check() != z3.sat:
            return
        m = solver.model()
        yield m
        # frames: [model, start, k, pushed]
        stack: list[list] = [[m, 0, 0, False]]
        while stack:
            fr = stack[-1]
            if fr[3]:
                solver.pop()
                fr[3] = False
                fr[2] += 1
            if fr[2] >= n:
                stack.pop()
                continue
            fm, start, k = fr[0], fr[1], fr[2]
            solver.push()
            fr[3] = True
            self._block_term(solver, fm, terms[k])
            for j in range(start, k):
                solver.add(terms[j] == fm.eval(terms[j], model_completion=True))
            if solver.check() == z3.sat:
                m2 = solver.model()
                yield m2
                stack.append([m2, k, k, False])
        while solver.num_scopes() > 0:
            solver.pop()

    def _lit(self, term: z3.ExprRef, value, negate: bool = False) -> z3.BoolRef:
        """``term == value`` (or ``!=``), one object per problem and key (target
        terms are a small bounded set; reusing them keeps z3's term history,
        which its choices depend on, the same from draw to draw)."""
        key = (term.get_id(), value, negate)
        lit = self._lits.get(key)
        if lit is None:
            if z3.is_bool(term):
                lit = term == z3.BoolVal(bool(value), self.ctx)
            else:
                lit = term == _bv(int(value), self.ctx)
            if negate:
                lit = z3.Not(lit)
            self._lits[key] = (term, lit)
            return lit
        return lit[1]

    def _solved(self, model: z3.ModelRef):
        # block() and decode() read the same model one after the other
        cached = getattr(self, "_last_solved", None)
        if cached is not None and cached[0] is model:
            return cached[1], cached[2], cached[3]
        vals = {}
        for key, c in self.scalars.items():
            vals[key] = _signed(model.eval(c, model_completion=True))
        entries: dict[tuple[str, str], dict[int, int]] = {}
        blockable: dict[tuple[str, int], tuple] = {}
        if not self.extensions:
            # upstream reads the model's explicit entries of each argument
            # array (unsigned, indices 0..20), not the formulas' reads
            for arr, (arg, part) in self._array_terms():
                got: dict[int, int] = {}
                for e_idx, e_val in explicit_entries(model, arr):
                    if e_idx <= BLOCK_INDEX_LIMIT:
                        got[e_idx] = e_val
                if got:
                    entries[(arg, part)] = got
            self._last_solved = (model, vals, entries, blockable)
            return vals, entries, blockable
        for s in self.selects:
            if s.arg is None:
                continue
            idx = _signed(model.eval(s.index, model_completion=True))
            val = _signed(model.eval(s.term, model_completion=True))
            if idx is None or val is None:
                continue
            entries.setdefault((s.arg, s.part), {}).setdefault(idx, val)
            if abs(idx) <= BLOCK_INDEX_LIMIT:
                arr = s.term.arg(0)
                blockable.setdefault((arr.decl().name(), idx), (arr, val))
        self._last_solved = (model, vals, entries, blockable)
        return vals, entries, blockable

    def block(self, model: z3.ModelRef) -> Optional[z3.BoolRef]:
        if not self.constrained:
            return None
        vals, _, blockable = self._solved(model)
        lits: list[z3.BoolRef] = []
        for key in sorted(self.scalars):
            v = vals.get(key)
            if v is not None:
                lits.append(self.scalars[key] != _bv(v, self.ctx))
        for (_, idx), (arr, val) in sorted(blockable.items(), key=lambda kv: kv[0]):
            lits.append(arr[_bv(idx, self.ctx)] != _bv(val, self.ctx))
        return z3.Or(lits) if lits else None

    def decode(self, model: z3.ModelRef, rng: random.Random) -> AbstractInput:
        if self.constrained:
            vals, entries, _ = self._solved(model)
            variant_md1 = z3.is_true(model.eval(self.sel_mindim1, model_completion=True))
            variant_lm1 = z3.is_true(model.eval(self.sel_listmin1, model_completion=True))
            variant = f"min_dim={int(variant_md1)},list_min={int(variant_lm1)}"
        else:
            vals, entries, variant_lm1, variant = {}, {}, False, None
        from .fill import fill_args   # fill reads this module's bounds and ArgExtra
        # faithful: upstream's list-minimum variable of a list with random items
        # is fixed by its first goal variant (0), whatever the variant
        args, solved = fill_args(self, rng, vals, entries, variant_lm1 and self.extensions)
        origin: dict[str, Any] = {"set": self.set_id}
        if variant:
            origin["variant"] = variant
        return AbstractInput(api=self.spec.name, args=args, solved=solved, origin=origin)

    # ---- checking an input against the formulas ----
    def input_constraints(self, ai: AbstractInput) -> list[z3.BoolRef]:
        """Equalities fixing the formula variables to what ``ai`` holds."""
        eqs: list[z3.BoolRef] = []
        for (arg, part), c in self.scalars.items():
            if (arg, part) in self.created or arg not in ai.args:
                continue
            v = ai.args[arg]
            spec = self._args[arg]
            code: Optional[int] = None
            if part == "rank" and isinstance(v, TensorDesc):
                code = v.rank
            elif part == "len" and isinstance(v, list):
                code = len(v)
            elif part == "fmt" and isinstance(v, str) and v in FMT_CODES:
                code = FMT_CODES[v]
            elif part == "value":
                if spec.kind == STR and isinstance(v, str):
                    if spec.name == "padding":
                        code = PADDING_CODES.get(v)
                    elif spec.allowed and v in spec.allowed:
                        code = spec.allowed.index(v) + 1
                elif isinstance(v, bool):
                    code = int(v)
                elif isinstance(v, int):
                    code = v
            if code is not None:
                eqs.append(c == _bv(code, self.ctx))
        for arg, part in sorted(self.arrays):
            v = ai.args.get(arg)
            arr = z3.Array(f"ARGNAME_{arg}_NAMEEND{'_DIMSIZE' if part == 'dims' else '_VAL'}",
                           z3.BitVecSort(BV_WIDTH, self.ctx), z3.BitVecSort(BV_WIDTH, self.ctx))
            if part == "dims" and isinstance(v, TensorDesc):
                r = v.rank
                for i, d in enumerate(v.shape):
                    eqs.append(arr[_bv(i, self.ctx)] == _bv(int(d), self.ctx))
                    eqs.append(arr[_bv(i - r, self.ctx)] == _bv(int(d), self.ctx))
            elif part == "items" and isinstance(v, list):
                for i, x in enumerate(v):
                    if isinstance(x, bool):
                        eqs.append(arr[_bv(i, self.ctx)] == _bv(int(x), self.ctx))
                    elif isinstance(x, int):
                        eqs.append(arr[_bv(i, self.ctx)] == _bv(x, self.ctx))
        return eqs

    def check_input(self, ai: AbstractInput, timeout_ms: int = 20000) -> bool:
        """Whether ``ai``'s ranks, dims, lengths, items and values satisfy the
        extracted formulas (element counts, list item bounds and internal
        variables stay existential, as upstream never ties them to the input)."""
        if not self._core:
            return True
        s = z3.Solver(ctx=self.ctx)
        limit(s, timeout_ms)
        s.add(self._core)
        s.add(self.input_constraints(ai))
        return s.check() == z3.sat
