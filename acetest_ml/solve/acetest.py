"""ACETest's extracted constraints: the names of the modules that do the work,
re-exported so existing imports keep working.

- :mod:`acetest_ml.solve.smt2`: cleaning and parsing ACETest's ``.z3`` files;
- :mod:`acetest_ml.solve.z3walk`: walking z3 terms (variables, array reads,
  the assertions connected to an argument);
- :mod:`acetest_ml.solve.acetest_problem`: :class:`AcetestProblem`, one
  constraint set of one API as a :class:`~acetest_ml.solve.problem.Problem`;
- :mod:`acetest_ml.solve.fill`: the random filler of what the model leaves open.
"""
from __future__ import annotations

from ..model import canonical_dtype
from .acetest_problem import (
    BIG_RANK, BIG_RANK_PROB, BLOCK_INDEX_LIMIT, BV_WIDTH, CODE_FMTS, CODE_PADDINGS,
    DIM_VALUE_ARGS, FMT_CODES, ITEM_MAX, ITEMS_ONLY_LEN_MAX, KNOWN_SUFFIXES, LARGE_INT, LEN_MAX,
    MIN_ONE_ARGS, NUMEL_LIMIT, PADDING_CODES, QUANTIZED, RANK_MAX, SMALL_INT, SOLVED_DIM_MAX,
    AcetestProblem, ArgExtra, parts_for_kind, split_var,
)
from .fill import (
    ANY_DTYPES, EDGE_PROB, FREE_DIM_MAX, HOLE_DIM_MAX, HUGE_VALUE, INT8_VALUE_RANGE,
    ITEM_FILLERS, RANDOM_LEN_MAX, TENSOR_VALUE_RANGE, VALUE_FILLERS, ZERO_PROB, Filler, fill_args,
)
from .smt2 import (
    ConstraintFile, ConstraintFileError, all_vars_in, clean_smt2, file_kind, read_constraint_file,
)
from .z3walk import collect, keep_interesting

__all__ = [
    "ANY_DTYPES", "BIG_RANK", "BIG_RANK_PROB", "BLOCK_INDEX_LIMIT", "BV_WIDTH", "CODE_FMTS",
    "CODE_PADDINGS", "DIM_VALUE_ARGS", "EDGE_PROB", "FMT_CODES", "FREE_DIM_MAX", "HOLE_DIM_MAX",
    "HUGE_VALUE", "INT8_VALUE_RANGE", "ITEM_FILLERS", "ITEM_MAX", "ITEMS_ONLY_LEN_MAX",
    "KNOWN_SUFFIXES", "LARGE_INT", "LEN_MAX", "MIN_ONE_ARGS", "NUMEL_LIMIT", "PADDING_CODES",
    "QUANTIZED", "RANDOM_LEN_MAX", "RANK_MAX", "SMALL_INT", "SOLVED_DIM_MAX", "TENSOR_VALUE_RANGE",
    "VALUE_FILLERS", "ZERO_PROB", "AcetestProblem", "ArgExtra", "ConstraintFile",
    "ConstraintFileError", "Filler", "all_vars_in", "canonical_dtype", "clean_smt2", "collect",
    "file_kind", "fill_args", "keep_interesting", "parts_for_kind", "read_constraint_file",
    "split_var",
]
