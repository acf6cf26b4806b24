"""ACETest's SMT-LIB2 constraint files (``*.z3``): cleaning and parsing.

ACETest's extractor writes one file per constraint set of a kernel; the files
carry ``model-add`` / ``model-del`` forms that z3's parser does not take, so
:func:`clean_smt2` drops them before :func:`read_constraint_file` parses the
rest into a context of the file's own.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Iterable

import z3

from .z3walk import collect


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


def all_vars_in(files: Iterable[ConstraintFile]) -> set[str]:
    """Every variable name the files use."""
    names: set[str] = set()
    for f in files:
        _, consts, _ = collect(f.assertions)
        names.update(consts)
    return names
