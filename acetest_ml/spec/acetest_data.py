"""ACETest's own data: op_json argument properties and extracted constraints.

Layout (ACETest's ``Tester/data``; ``data_dir`` may be that folder or its
``tensorflow/`` subfolder)::

    tensorflow/API2OP.csv                       api_name op_name file_path
    tensorflow/op_json/<Api>.json               argument properties of one API
    tensorflow/constraints/<OpName>/*.z3        compute_N / constructor_N formulas

:meth:`AcetestData.load` turns one API into an :class:`ApiSpec` (from its
op_json, or from TensorFlow's op registry when there is none) and one
:class:`~acetest_ml.solve.acetest_problem.AcetestProblem` per satisfiable
compute x constructor combination, the way ACETest's Tester does.
"""
from __future__ import annotations

import copy
import functools
import inspect
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any, Optional

import z3

from ..errors import UnknownApiError, UserError
from ..model import (
    BOOL, BOOL_LIST, DTYPE, DTYPE_LIST, FLOAT, FLOAT_DTYPES, FLOAT_LIST, INT, INT_LIST, STR,
    STR_LIST, TENSOR, TENSOR_LIST, ApiSpec, ArgSpec, canonical_dtype,
)
from ..quiet import import_framework
from ..solve.acetest_problem import QUANTIZED, AcetestProblem, ArgExtra, split_var
from ..solve.smt2 import ConstraintFile, ConstraintFileError, all_vars_in, read_constraint_file

API_PREFIX = "tf.raw_ops."
MAX_FILES_PER_KIND = 100   # upstream samples at most 100 compute and 100 constructor files


@dataclass
class AcetestApi:
    """One API as ACETest's data describes it."""

    name: str
    op_name: Optional[str]
    spec: ApiSpec
    problems: list
    skipped: list = field(default_factory=list)   # (file or set id, reason)
    notes: list = field(default_factory=list)
    extras: dict = field(default_factory=dict)    # argument name -> ArgExtra


_REF_RE = re.compile(r"^&([A-Za-z0-9_]+)\.value$")
_LIST_CHILD_KIND = {"int": INT_LIST, "float": FLOAT_LIST, "double": FLOAT_LIST, "bool": BOOL_LIST,
                    "string": STR_LIST, "tensor": TENSOR_LIST, "type": DTYPE_LIST}


def _dtype_list(names: Any, notes: list, where: str) -> list:
    out: list = []
    for n in names or []:
        c = canonical_dtype(n)
        if c is None:
            notes.append(f"{where}: dtype {n!r} dropped ("
                         + ("quantized" if n in QUANTIZED else "no counterpart") + ")")
        else:
            out.append(c)
    return out


def _dedupe(xs: list) -> list:
    seen: list = []
    for x in xs:
        if x not in seen:
            seen.append(x)
    return seen


def _tensor_dtype(arg: ArgSpec, dtype: Any, notes: list) -> None:
    if isinstance(dtype, str):
        m = _REF_RE.match(dtype.strip())
        if m:
            arg.dtype_ref = m.group(1)
            return
        c = canonical_dtype(dtype)
        if c is None:
            notes.append(f"{arg.name}: dtype {dtype!r} not supported, any dtype is drawn")
        else:
            arg.dtypes = [c]
    elif isinstance(dtype, list):
        arg.dtypes = _dedupe(_dtype_list(dtype, notes, arg.name)) or None


def spec_from_op_json(api_name: str, props: dict) -> tuple[ApiSpec, dict, list]:
    """ApiSpec (source="acetest"), per-argument extras and notes from one op_json."""
    if not isinstance(props, dict):
        raise UserError(f"op_json of {api_name} is not a JSON object")
    notes: list = []
    extras: dict[str, ArgExtra] = {}
    inputs: list[tuple[int, str]] = []
    attrs: list[str] = []
    for name, p in props.items():
        if not isinstance(p, dict):
            raise UserError(f"op_json of {api_name}: argument {name!r} is not an object")
        order = p.get("input_order")
        if isinstance(order, int) and order >= 0:
            inputs.append((order, name))
        else:
            attrs.append(name)
    ordered = [n for _, n in sorted(inputs, key=lambda t: t[0])] + attrs
    args: list[ArgSpec] = []
    unsupported = None
    for name in ordered:
        p = props[name]
        typ = str(p.get("type") or "").lower()
        ex = ArgExtra()
        a = ArgSpec(name=name, kind=INT)
        if typ in ("int", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"):
            a.kind = INT
            a.minimum, a.maximum = p.get("min"), p.get("max")
            if isinstance(p.get("enum"), list) and p["enum"]:
                a.allowed = list(p["enum"])
        elif typ in ("float", "double", "float16", "float32", "float64", "bfloat16"):
            a.kind = FLOAT
            a.minimum, a.maximum = p.get("min"), p.get("max")
        elif typ == "bool":
            a.kind = BOOL
        elif typ == "string":
            a.kind = STR
            if isinstance(p.get("enum"), list) and p["enum"]:
                a.allowed = list(p["enum"])
            ex.str_length = p.get("length") if isinstance(p.get("length"), int) else None
        elif typ == "tensor":
            a.kind = TENSOR
            _tensor_dtype(a, p.get("dtype"), notes)
            if isinstance(p.get("shape"), list):
                ex.shape = list(p["shape"])
                a.min_rank = a.max_rank = len(ex.shape)
            elif isinstance(p.get("ndim"), int):
                ex.ndim = p["ndim"]
                a.min_rank = a.max_rank = p["ndim"]
            else:
                if isinstance(p.get("min_ndim"), int):
                    a.min_rank = p["min_ndim"]
                if isinstance(p.get("max_ndim"), int):
                    a.max_rank = p["max_ndim"]
        elif typ in ("list", "shape"):
            child = p.get("child_prop") or {}
            if isinstance(child, list):
                child = child[0] if child and isinstance(child[0], dict) else {}
            ctype = child.get("type") if isinstance(child.get("type"), str) else None
            ex.child_type = ctype
            a.kind = _LIST_CHILD_KIND.get((ctype or "int").lower(), INT_LIST)
            if ctype is not None and ctype.lower() not in _LIST_CHILD_KIND:
                notes.append(f"{name}: list items of type {ctype!r} drawn as ints")
            a.minimum, a.maximum = child.get("min"), child.get("max")
            if isinstance(child.get("enum"), list) and child["enum"]:
                a.allowed = list(child["enum"])
            if a.kind == TENSOR_LIST:
                _tensor_dtype(a, child.get("dtype"), notes)
            if a.kind == DTYPE_LIST and isinstance(child.get("enum"), list):
                a.allowed = _dedupe(_dtype_list(child["enum"], notes, name)) or None
            if isinstance(p.get("length"), int):
                a.length = p["length"]
            if isinstance(p.get("min_len"), int):
                a.min_length = p["min_len"]
            if isinstance(p.get("max_len"), int):
                ex.max_len = p["max_len"]
        elif typ == "type":
            a.kind = DTYPE
            if isinstance(p.get("enum"), list) and p["enum"]:
                choices = _dtype_list(p["enum"], notes, name)
                ex.dtype_choices = choices or None
                a.allowed = _dedupe(choices) or None
        else:
            unsupported = f"argument {name!r} has op_json type {typ!r}"
            notes.append(unsupported)
            a.kind = INT
        if p.get("value") is not None:
            ex.value = p["value"]
        if p.get("is_mid"):
            a.passed = False
        if p.get("optional"):
            a.optional = True
        if p.get("default") is not None:
            a.has_default = True
            d = p["default"]
            a.default = canonical_dtype(d) or d if a.kind == DTYPE else d
        args.append(a)
        if ex != ArgExtra():
            extras[name] = ex
    spec = ApiSpec(name=api_name, framework="tf", args=args, source="acetest",
                   unsupported=unsupported)
    if notes:
        spec.notes["acetest"] = list(notes)
    return spec, extras, notes


def _scalar_kind_for(a: ArgSpec) -> str:
    if a.dtypes and all(d in FLOAT_DTYPES for d in a.dtypes):
        return FLOAT
    if a.dtypes == ["string"]:
        return STR
    return INT


def rewrite_for_usage(spec: ApiSpec, var_names: set, aliases: dict) -> list:
    """Upstream turns tensor arguments that the formulas use as lists (or whose
    name ends with ``shape``) into lists and those used as plain values into
    scalars. Rewrites ``spec`` in place; returns notes."""
    used: dict[str, set] = {}
    for n in var_names:
        sp = split_var(n)
        if sp is None:
            continue
        arg = aliases.get(sp[0], sp[0])
        used.setdefault(arg, set()).add(sp[1])
    notes = []
    for i, a in enumerate(spec.args):
        if a.kind != TENSOR:
            continue
        suffixes = used.get(a.name, set())
        new_kind = None
        if a.name == "shape" or a.name.endswith("_shape"):
            new_kind = INT_LIST if _scalar_kind_for(a) != FLOAT else FLOAT_LIST
        elif suffixes & {"_LEN", "_VAL", "_ITERATOR_VAL"}:
            new_kind = INT_LIST if _scalar_kind_for(a) != FLOAT else FLOAT_LIST
        elif suffixes & {"", "_SCALAR"}:
            new_kind = _scalar_kind_for(a)
        if new_kind is None:
            continue
        spec.args[i] = ArgSpec(name=a.name, kind=new_kind, optional=a.optional,
                               has_default=a.has_default, default=a.default,
                               keyword_only=a.keyword_only, passed=a.passed)
        notes.append(f"{a.name}: tensor used as {new_kind} by the constraints (passed as a "
                     f"python {'list' if new_kind.endswith('list') else 'value'})")
    return notes


@functools.lru_cache(maxsize=None)
def raw_op_parameters(api: str) -> Optional[frozenset]:
    """Keyword names the Python ``tf.raw_ops`` function of ``api`` accepts
    (without ``name``), or None when TensorFlow or the op is not available."""
    if not api.startswith(API_PREFIX):
        return None
    try:
        tf = import_framework("tensorflow")   # its start-up lines go to the import log
    except ImportError:
        return None
    fn = getattr(tf.raw_ops, api[len(API_PREFIX):], None)
    if fn is None:
        return None
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return None
    return frozenset(n for n in params if n != "name")


def reconcile_with_raw_op(spec: ApiSpec) -> list:
    """Arguments the op_json passes but the raw op does not accept (attributes
    TensorFlow infers, such as a ragged rank or a list length) are kept, with
    their values, as not passed; returns a note per argument. ACETest passes
    them, and every such call fails with an unexpected-keyword TypeError."""
    accepted = raw_op_parameters(spec.name)
    if accepted is None:
        return []
    notes = []
    for a in spec.args:
        if a.passed and a.name not in accepted:
            a.passed = False
            notes.append(f"{a.name}: not an argument of {spec.name} (TensorFlow infers it); not passed")
    if notes:
        spec.notes.setdefault("dropped_args", []).extend(n.split(":")[0] for n in notes)
    return notes


def _natural_key(name: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


class AcetestData:
    """Reader for ACETest's data folder (see the module docstring)."""

    def __init__(self, data_dir: str, *, check_timeout_ms: int = 30000,
                 analyse_timeout_ms: int = 3000):
        path = os.path.abspath(os.fspath(data_dir))
        if not os.path.isdir(path):
            raise UserError(f"ACETest data directory not found: {path}")
        root = path if os.path.isfile(os.path.join(path, "API2OP.csv")) else os.path.join(path, "tensorflow")
        csv = os.path.join(root, "API2OP.csv")
        if not os.path.isfile(csv):
            raise UserError(f"ACETest data directory has no tensorflow/API2OP.csv: {path}")
        self.root = root
        self.check_timeout_ms = check_timeout_ms
        self.analyse_timeout_ms = analyse_timeout_ms
        self.api2op: dict[str, str] = {}
        with open(csv, "r", encoding="utf-8") as f:
            for i, line in enumerate(f):
                parts = line.split()
                if i == 0 and parts[:2] == ["api_name", "op_name"]:
                    continue
                if len(parts) >= 2 and parts[0] not in self.api2op:
                    self.api2op[parts[0]] = parts[1]
        self._file_cache: dict[str, Any] = {}

    # ---- where things are ----
    @staticmethod
    def normalize(api: str) -> str:
        api = api.strip()
        return api if "." in api else API_PREFIX + api

    def op_json_path(self, api: str) -> str:
        return os.path.join(self.root, "op_json", api.split(".")[-1] + ".json")

    def constraint_dir(self, op_name: Optional[str]) -> Optional[str]:
        if not op_name:
            return None
        d = os.path.join(self.root, "constraints", op_name)
        return d if os.path.isdir(d) else None

    def op_name(self, api: str) -> Optional[str]:
        return self.api2op.get(self.normalize(api))

    def constraint_files(self, api: str) -> list[str]:
        d = self.constraint_dir(self.op_name(api))
        if d is None:
            return []
        names = sorted((n for n in os.listdir(d) if n.endswith(".z3")), key=_natural_key)
        return [os.path.join(d, n) for n in names]

    def apis(self) -> list[str]:
        """APIs of API2OP.csv that have an op_json or a constraints folder."""
        out = []
        for api, op in self.api2op.items():
            if os.path.isfile(self.op_json_path(api)) or self.constraint_dir(op) is not None:
                out.append(api)
        return sorted(out)

    def __contains__(self, api: str) -> bool:
        api = self.normalize(api)
        return os.path.isfile(self.op_json_path(api)) or self.constraint_dir(self.api2op.get(api)) is not None

    # ---- loading ----
    def _read(self, path: str):
        got = self._file_cache.get(path)
        if got is None:
            try:
                got = read_constraint_file(path)
            except ConstraintFileError as e:
                got = e
            self._file_cache[path] = got
        return got

    @staticmethod
    def _tf_spec(api: str) -> Optional[ApiSpec]:
        try:
            from .tensorflow import get_tf_spec  # written alongside; imported lazily
        except ImportError as e:
            raise UnknownApiError(f"{api}: no op_json in the ACETest data and the TensorFlow "
                                  f"registry reader is unavailable ({e})") from None
        return get_tf_spec(api)

    def has_op_json(self, api: str) -> bool:
        return os.path.isfile(self.op_json_path(self.normalize(api)))

    def load(self, api: str, registry_spec: Optional[ApiSpec] = None, *,
             extensions: bool = False) -> AcetestApi:
        """``registry_spec``: TensorFlow's registry spec of an API without an
        op_json, when the caller already has it (saves importing TensorFlow).
        ``extensions``: our generation improvements beyond upstream's Tester
        (off: faithful, four goal variants per constraint set; see
        :mod:`acetest_ml.solve.acetest_problem`)."""
        name = self.normalize(api)
        op = self.api2op.get(name)
        json_path = self.op_json_path(name)
        notes: list = []
        extras: dict = {}
        aliases: dict = {}
        files = self.constraint_files(name)
        if os.path.isfile(json_path):
            try:
                with open(json_path, "r", encoding="utf-8") as f:
                    props = json.load(f)
            except (OSError, ValueError) as e:
                raise UserError(f"cannot read {json_path}: {e}") from None
            spec, extras, spec_notes = spec_from_op_json(name, props)
            notes += spec_notes
            notes += reconcile_with_raw_op(spec)
            inputs = sorted((p.get("input_order"), n) for n, p in props.items()
                            if isinstance(p, dict) and isinstance(p.get("input_order"), int)
                            and p["input_order"] >= 0)
            aliases = {f"input_{k}": n for k, n in inputs}
        else:
            try:
                tf_spec = (copy.deepcopy(registry_spec) if registry_spec is not None
                           else self._tf_spec(name))
            except UnknownApiError:
                raise
            except UserError as e:
                raise UnknownApiError(f"{name}: not in the ACETest data ({self.root}) and {e}") from None
            if tf_spec is None:
                raise UnknownApiError(f"{name}: not in the ACETest data ({self.root}) and not a "
                                      "TensorFlow raw op")
            spec = tf_spec
            if files:
                notes.append("no op_json: argument properties from TensorFlow's op registry")
            else:
                notes.append("not in the ACETest data: TensorFlow registry spec, default bounds only")
            tensor_like = [a.name for a in spec.args if a.kind in (TENSOR, TENSOR_LIST)]
            aliases = {f"input_{k}": n for k, n in enumerate(tensor_like)}
        skipped: list = []
        parsed: list[ConstraintFile] = []
        digests: dict[tuple[str, str], str] = {}
        per_kind: dict[str, int] = {}
        for path in files:
            got = self._read(path)
            rel = os.path.relpath(path, self.root)
            if isinstance(got, ConstraintFileError):
                skipped.append((rel, str(got)))
                continue
            kind_key = got.kind
            if per_kind.get(kind_key, 0) >= MAX_FILES_PER_KIND:
                skipped.append((rel, f"over the {MAX_FILES_PER_KIND} {kind_key} files upstream samples"))
                continue
            dup = digests.get((kind_key, got.digest))
            if dup is not None:
                skipped.append((rel, f"same formula as {dup}"))
                continue
            digests[(kind_key, got.digest)] = got.name
            per_kind[kind_key] = per_kind.get(kind_key, 0) + 1
            parsed.append(got)
        if parsed:
            notes += rewrite_for_usage(spec, all_vars_in(parsed), aliases)
        computes = [f for f in parsed if f.kind != "constructor"]
        constructors = [f for f in parsed if f.kind == "constructor"]
        combos: list[list[ConstraintFile]] = []
        if computes and constructors:
            combos = [[c, k] for c in computes for k in constructors]
        elif computes or constructors:
            combos = [[f] for f in (computes or constructors)]
        problems: list = []
        for combo in combos:
            prob = AcetestProblem(spec, [(f.name, f.text) for f in combo], extras=extras,
                                  aliases=aliases, analyse_timeout_ms=self.analyse_timeout_ms,
                                  extensions=extensions)
            r = prob.satisfiable(self.check_timeout_ms)
            if r == z3.unsat:
                skipped.append((prob.set_id, "unsatisfiable combination"))
                continue
            if not prob.constrained:
                notes.append(f"{prob.set_id}: no assertion involves an argument, inputs are "
                             "drawn from the argument properties alone")
            if r == z3.unknown:
                notes.append(f"{prob.set_id}: satisfiability unknown within "
                             f"{self.check_timeout_ms} ms, kept")
            variants = prob.variants(self.check_timeout_ms)
            if not variants:
                skipped.append((prob.set_id, "every goal variant unsatisfiable"))
            problems.extend(variants)
        if not problems:
            if combos:
                notes.append("no satisfiable constraint set: runs on the argument properties "
                             "alone, as ACETest does")
            elif not files:
                notes.append("no constraint files: runs on the argument properties alone")
            else:
                notes.append("no usable constraint file: runs on the argument properties alone")
            problems.append(AcetestProblem(spec, [], extras=extras, aliases=aliases,
                                           set_id="op_json" if spec.source == "acetest" else "registry",
                                           extensions=extensions))
        return AcetestApi(name=name, op_name=op, spec=spec, problems=problems, skipped=skipped,
                          notes=notes, extras=extras)
