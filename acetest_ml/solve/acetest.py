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
  ranges, including its rare huge values) by :meth:`AcetestProblem.decode`.

Where we deviate from upstream (documented in the class): solved values are
never overwritten by the random huge/zero mutations (so every input satisfies
its formulas), a ``padding``/enum string code is bound to the enum's codes,
negative dimension indices are resolved as ``index + rank`` (upstream ignores
them), an element count of 1 on a tensor whose rank is not 1 gives all-ones
dims of the solved rank (upstream sets the shape to ``[1]``), and quantized
dtypes are dropped (the data model has none).
"""
from __future__ import annotations

import hashlib
import random
import re
import string
from dataclasses import dataclass
from typing import Any, Iterable, Optional, Sequence

import z3

from ..model import (
    ALL_DTYPES, BOOL, BOOL_LIST, DTYPE, DTYPE_LIST, FLOAT, FLOAT_LIST, INT, INT_LIST, LIST_KINDS,
    SCALAR, SHAPE, STR, STR_LIST, TENSOR, TENSOR_LIST, AbstractInput, ApiSpec, ArgSpec,
    DTypeValue, TensorDesc, canonical_dtype,
)
from .problem import Problem, int_value, limit

BV_WIDTH = 64

# ---- upstream's default bounds and random ranges -------------------------------------------
RANK_MAX = 6
SOLVED_DIM_MAX = 16       # bound on every referenced dimension size
HOLE_DIM_MAX = 32         # a dimension a solved shape leaves open
FREE_DIM_MAX = 16         # dimensions of a shape nothing decided
LEN_MAX = 10              # list length when the length is referenced
ITEMS_ONLY_LEN_MAX = 6    # list length when only the items are referenced
RANDOM_LEN_MAX = 6        # list length filled at random
NUMEL_LIMIT = 6           # element counts are in [0, 6)
ITEM_MAX = 128            # list items
SMALL_INT = 1024
LARGE_INT = 2 ** 16
BIG_RANK = 2 ** 16        # upstream's rare "rank > 65536" bound (clipped to 6 when applied)
BIG_RANK_PROB = 0.2
HUGE_VALUE = 2 ** 64 - 1
TENSOR_VALUE_RANGE = 2 ** 10
INT8_VALUE_RANGE = 2 ** 7
ZERO_PROB = 0.01
EDGE_PROB = 0.1
MIN_ONE_ARGS = ("ksize", "strides")   # items / dims of these start at 1
DIM_VALUE_ARGS = ("dim", "dimension")  # ints bounded to 0..6
BLOCK_INDEX_LIMIT = 20                 # array entries upstream reads and blocks

# data_format codes and padding codes used by the extracted formulas
FMT_CODES = {"NHWC": 0, "NDHWC": 0, "NCHW": 1, "NCDHW": 1, "NCHW_VECT_C": 2,
             "NHWC_VECT_W": 3, "HWNC": 4, "HWCN": 5}
CODE_FMTS = {0: ("NHWC", "NDHWC"), 1: ("NCHW", "NCDHW"), 2: ("NCHW_VECT_C",),
             3: ("NHWC_VECT_W",), 4: ("HWNC",), 5: ("HWCN",)}
PADDING_CODES = {"VALID": 1, "SAME": 2, "EXPLICIT": 3}
CODE_PADDINGS = {v: k for k, v in PADDING_CODES.items()}

# ACETest dtype spellings -> canonical names (None: no counterpart in the data model)
QUANTIZED = ("qint8", "qint16", "qint32", "quint8", "quint16")
# upstream draws "any dtype" from its table of spellings (aliases weigh double)
_ANY_DTYPE_SPELLINGS = (
    "int8", "int16", "int", "int32", "int64", "half", "uint8", "uint16", "uint", "uint32",
    "uint64", "bfloat16", "float16", "float32", "float64", "double", "float", "complex64",
    "complex128", "complex", "string", "bool",
)
_STRING_CHARS = string.ascii_letters + string.digits + " \t'!@#$^&*-+/,.<>?;:|`~"


ANY_DTYPES: tuple[str, ...] = tuple(d for d in map(canonical_dtype, _ANY_DTYPE_SPELLINGS) if d)

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


# ---- reading .z3 files ---------------------------------------------------------------------
class ConstraintFileError(Exception):
    """A constraint file that cannot be used (the message is the reason)."""


def clean_smt2(text: str) -> str:
    """The file's top-level forms without ``model-add`` / ``model-del`` ones."""
    forms: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
            continue
        if c == ";":
            j = text.find("\n", i)
            i = n if j < 0 else j + 1
            continue
        if c != "(":
            raise ConstraintFileError(f"unexpected text {text[i:i + 20]!r} at offset {i}")
        depth, j = 0, i
        while True:
            if j >= n:
                raise ConstraintFileError(f"unbalanced parentheses in the form at offset {i}")
            ch = text[j]
            if ch == "(":
                depth += 1
            elif ch == ")":
                depth -= 1
                if depth == 0:
                    break
            elif ch == '"':
                k = j + 1
                while k < n and not (text[k] == '"' and (k + 1 >= n or text[k + 1] != '"')):
                    k += 2 if text[k] == '"' else 1
                j = k
            elif ch == "|":
                k = text.find("|", j + 1)
                j = n if k < 0 else k
            elif ch == ";":
                k = text.find("\n", j)
                j = n - 1 if k < 0 else k
            j += 1
        form = text[i:j + 1]
        head = form[1:].lstrip()
        if not (head.startswith("model-add") or head.startswith("model-del")):
            forms.append(form)
        i = j + 1
    return "\n".join(forms)


@dataclass
class ConstraintFile:
    name: str            # file stem, e.g. "compute_1"
    kind: str            # "compute" | "constructor" | "other"
    path: str
    digest: str          # sha256 of the cleaned text
    assertions: list     # parsed in a context of this file's own (never z3's main one)
    text: str = ""       # the cleaned SMT-LIB2 text; each problem parses it into its own context


def file_kind(stem: str) -> str:
    if "compute" in stem:
        return "compute"
    if "constructor" in stem:
        return "constructor"
    return "other"


def read_constraint_file(path: str) -> ConstraintFile:
    """Parse one ACETest .z3 file. Raises ConstraintFileError with the reason."""
    import os

    stem = os.path.splitext(os.path.basename(path))[0]
    try:
        with open(path, "r", encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise ConstraintFileError(f"cannot read: {e}") from None
    cleaned = clean_smt2(text)
    digest = hashlib.sha256(cleaned.encode("utf-8")).hexdigest()
    try:
        # a private context: parsing into z3's shared main context would make
        # every later problem's terms depend on which files were read before
        vec = z3.parse_smt2_string(cleaned, ctx=z3.Context())
    except z3.Z3Exception as e:
        msg = str(e.value if hasattr(e, "value") else e).strip().splitlines()
        raise ConstraintFileError("z3 cannot parse it: " + (msg[0] if msg else "parse error")) from None
    assertions = [a for a in vec]
    if not assertions:
        raise ConstraintFileError("no assertions")
    return ConstraintFile(stem, file_kind(stem), path, digest, assertions, cleaned)


# ---- z3 helpers ----------------------------------------------------------------------------
def _is_var(e: z3.ExprRef) -> bool:
    return z3.is_const(e) and e.decl().kind() == z3.Z3_OP_UNINTERPRETED


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


def _collect(assertions: Sequence[z3.ExprRef]):
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
        per, _, _ = _collect(assertions)
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


def _bv(v: int, ctx: z3.Context) -> z3.BitVecNumRef:
    return z3.BitVecVal(v, BV_WIDTH, ctx)


_signed = int_value  # z3 value -> signed Python int (None if not a value)


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
class _Binding:
    arg: str
    part: str
    const: z3.ExprRef


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
                 set_id: Optional[str] = None, analyse_timeout_ms: int = 3000):
        self.spec = spec
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
        per, consts, selects = _collect(raw)
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
        return list(self._core) + list(self._ext)

    def core_formulas(self) -> list[z3.BoolRef]:
        """The extracted formulas alone (no default bounds)."""
        return list(self._core)

    def random_targets(self, rng: random.Random) -> list[z3.BoolRef]:
        if not self.constrained:
            return []
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
        filler = _Filler(self, rng, vals, entries, variant_lm1)
        args = filler.build()
        origin: dict[str, Any] = {"set": self.set_id}
        if variant:
            origin["variant"] = variant
        return AbstractInput(api=self.spec.name, args=args, solved=filler.solved, origin=origin)

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


# ---- filling an input ------------------------------------------------------------------------
class _Filler:
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
        k = a.kind
        if k == TENSOR:
            return self._tensor(a)
        if k in LIST_KINDS:
            return self._list(a)
        if k == INT:
            return self._int(a)
        if k == FLOAT or k == SCALAR:
            return self._float(a)
        if k == BOOL:
            return self._bool(a)
        if k == STR:
            return self._string(a)
        return None

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
        if dims:
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
        if numel is not None and not dims:
            # upstream: a 1-d tensor gets its element count as its size (here only
            # when no dimension size was solved, so the input keeps its formulas)
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
        if solved_ok:
            v = self._solved_val(a.name, "value")
            if v is not None:
                self.solved.append(a.name)
                return v
        ex = self._extra(a.name) if solved_ok else ArgExtra()
        if isinstance(ex.value, int) and not isinstance(ex.value, bool):
            return ex.value
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

    def _float(self, a: ArgSpec, solved_ok: bool = True) -> float:
        if solved_ok:
            v = self._solved_val(a.name, "value")
            if v is not None:
                self.solved.append(a.name)
                return float(v)
        ex = self._extra(a.name)
        if isinstance(ex.value, (int, float)) and not isinstance(ex.value, bool):
            return float(ex.value)
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
                out.append(bool(v) if a.kind == BOOL_LIST else v)
                any_solved = True
                continue
            if fixed is not None and i < len(fixed) and fixed[i] is not None:
                out.append(fixed[i])
                continue
            out.append(self._item(a, i))
        if any_solved:
            self.solved.append(f"{a.name}.items")
        return out

    def _item(self, a: ArgSpec, i: int) -> Any:
        k = a.kind
        if k in (INT_LIST, SHAPE):
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
            elif lo is None and k == INT_LIST and self._extra(a.name).child_type is None:
                lo = 0   # upstream: items without a type are ints >= 0
            return self._random_int(None, lo, hi)
        if k == FLOAT_LIST:
            return self._random_float(a.minimum, a.maximum)
        if k == BOOL_LIST:
            return bool(self.rng.randint(0, 1))
        if k == STR_LIST:
            allowed = [v for v in (a.allowed or []) if isinstance(v, str)]
            if allowed:
                return self.rng.choice(allowed)
            return "".join(self.rng.choice(_STRING_CHARS) for _ in range(self.rng.randint(0, 300)))
        if k == DTYPE_LIST:
            allowed = [d for d in (a.allowed or []) if d in ALL_DTYPES]
            return DTypeValue(self.rng.choice(allowed or list(ANY_DTYPES)))
        if k == TENSOR_LIST:
            return self._tensor(a, name=f"{a.name}[{i}]", solved_ok=False)
        return None


def all_vars_in(files: Iterable[ConstraintFile]) -> set[str]:
    """Every variable name the files use."""
    names: set[str] = set()
    for f in files:
        _, consts, _ = _collect(f.assertions)
        names.update(consts)
    return names
