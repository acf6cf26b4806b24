"""ACETest's extracted constraint files as :class:`Problem` s: the public face
of four modules with one job each.

- :mod:`.acetest_names`   ACETest's conventions (variable names, codes, dtypes, ranges)
- :mod:`.smt2`            reading ``.z3`` files (SMT-LIB2 cleaning, Z3 parsing)
- :mod:`.z3walk`          walking Z3 terms (variables, array selects, connected assertions)
- :mod:`.acetest_problem` :class:`AcetestProblem`, one constraint set of one API
- :mod:`.fill`            filling the rest of an input at random, per argument kind
"""
from __future__ import annotations

from ..model import canonical_dtype
from .acetest_names import (ANY_DTYPES, BV_WIDTH, CODE_FMTS, CODE_PADDINGS, FMT_CODES,
                            KNOWN_SUFFIXES, PADDING_CODES, QUANTIZED, parts_for_kind, split_var)
from .acetest_problem import AcetestProblem
from .fill import ArgExtra, Filler
from .smt2 import ConstraintFile, ConstraintFileError, clean_smt2, file_kind, read_constraint_file
from .z3walk import all_vars_in, collect, keep_interesting

__all__ = [
    "ANY_DTYPES", "BV_WIDTH", "CODE_FMTS", "CODE_PADDINGS", "FMT_CODES", "KNOWN_SUFFIXES",
    "PADDING_CODES", "QUANTIZED", "AcetestProblem", "ArgExtra", "ConstraintFile",
    "ConstraintFileError", "Filler", "all_vars_in", "canonical_dtype", "clean_smt2", "collect",
    "file_kind", "keep_interesting", "parts_for_kind", "read_constraint_file", "split_var",
]
