"""ACETest's conventions, shared by the problem and the filler: how its
formula variables name argument properties (``ARGNAME_<arg>_NAMEEND<suffix>``),
the data-format / padding codes, its dtype table, and upstream's default
bounds and random ranges."""
from __future__ import annotations

import re
import string
from typing import Optional

from ..model import (BOOL, DTYPE, FLOAT, INT, LIST_KINDS, QUANTIZED_DTYPES, SCALAR, STR, TENSOR,
                     canonical_dtype)

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

QUANTIZED = QUANTIZED_DTYPES
# upstream draws "any dtype" from its table of spellings (aliases weigh double)
_ANY_DTYPE_SPELLINGS = (
    "int8", "int16", "int", "int32", "int64", "half", "uint8", "uint16", "uint", "uint32",
    "uint64", "bfloat16", "float16", "float32", "float64", "double", "float", "complex64",
    "complex128", "complex", "string", "bool",
)
STRING_CHARS = string.ascii_letters + string.digits + " \t'!@#$^&*-+/,.<>?;:|`~"


ANY_DTYPES: tuple[str, ...] = tuple(d for d in map(canonical_dtype, _ANY_DTYPE_SPELLINGS) if d)
assert len(ANY_DTYPES) == len(_ANY_DTYPE_SPELLINGS)  # every spelling has a canonical name

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

