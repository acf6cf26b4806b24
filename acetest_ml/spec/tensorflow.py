"""ApiSpecs for every ``tf.raw_ops`` op, read from TensorFlow's op registry.

Each op's ``OpDef`` (``tensorflow.python.framework.op_def_registry``) is turned
into an :class:`~acetest_ml.model.ApiSpec` named ``tf.raw_ops.<Op>``:

- inputs become ``TENSOR`` / ``TENSOR_LIST`` arguments whose dtype either is
  fixed (``dtypes``) or follows a ``DTYPE`` argument (``dtype_ref``);
- attrs become scalar / list / dtype / shape arguments with their allowed
  values, minimum and decoded default;
- attrs TensorFlow infers from the inputs (type attrs of inputs, list lengths)
  are kept as arguments with ``passed=False``: they carry the allowed set and
  the bounds, but ``tf.raw_ops`` refuses them as keywords.

Argument names are the Python keyword names of the ``tf.raw_ops`` function
(a few ops rename OpDef args, e.g. ``Sum``'s ``reduction_indices`` is
``axis``); renamed ones are listed in ``notes["opdef_names"]``. Argument order
is the function's signature order (inputs, required attrs, attrs with
defaults), followed by the inferred attrs.

Ops we cannot build inputs for keep their spec, with ``unsupported`` set to a
short fixed reason (see ``REASON_*``) so reports can group them.

Specs are built once per process and shared: treat them as read-only. The
built table is cached as JSON under ``~/.cache/acetest-ml/``
(``$ACETEST_ML_CACHE_DIR``), keyed by the TensorFlow version, the oneDNN
switch and the source of the modules that build specs, so a process that only
needs specs (the campaign driver, ``specs``, reports) does not import
TensorFlow at all; a missing, stale or corrupt file is rebuilt.
"""
from __future__ import annotations

import difflib
import functools
import hashlib
import inspect
import json
import os
from pathlib import Path
from collections import Counter
from typing import Any, Iterable, Optional

from ..errors import UnknownApiError
from ..model import (ALL_DTYPES, canonical_dtype, BOOL, BOOL_LIST, DTYPE, DTYPE_LIST, FLOAT, FLOAT_LIST, INT,
                     INT_LIST, SHAPE, STR, STR_LIST, TENSOR, TENSOR_LIST, ApiSpec, ArgSpec)

PREFIX = "tf.raw_ops."
MIN_RANK = 0
MAX_RANK = 6

# Short fixed reasons for ApiSpec.unsupported.
REASON_INTERNAL = "internal op"
REASON_REF_INPUT = "ref input"
REASON_REF_OUTPUT = "ref output"
REASON_RESOURCE = "resource input"
REASON_VARIANT = "variant input"
REASON_QUANTIZED = "quantized dtype"
REASON_UNBUILDABLE = "unbuildable dtype"  # float8, int4, ... with nothing else allowed
REASON_FUNC = "func attr"
REASON_TENSOR_ATTR = "tensor attr"
REASON_LIST_SHAPE = "list(shape) attr"
REASON_UNKNOWN_ATTR = "unknown attr type"
REASON_NO_WRAPPER = "no python wrapper"
REASON_NO_CPU_KERNEL = "no CPU kernel"

# Scalar attr types -> (ArgSpec kind, list kind).
_SCALAR_ATTR_KINDS = {"int": INT, "float": FLOAT, "bool": BOOL, "string": STR}
_LIST_ATTR_KINDS = {"list(int)": INT_LIST, "list(float)": FLOAT_LIST, "list(bool)": BOOL_LIST,
                    "list(string)": STR_LIST, "list(type)": DTYPE_LIST}
# Attr types we have no ArgSpec kind for, and the reason an op needing them gets.
_UNREPRESENTABLE_ATTRS = {"func": REASON_FUNC, "list(func)": REASON_FUNC,
                          "tensor": REASON_TENSOR_ATTR, "list(tensor)": REASON_TENSOR_ATTR,
                          "list(shape)": REASON_LIST_SHAPE}


# --------------------------------------------------------------------------- dtypes

def _dtype_enum_name(enum_value: int) -> str:
    from tensorflow.core.framework import types_pb2
    try:
        return types_pb2.DataType.Name(enum_value)
    except ValueError:
        return f"DT_UNKNOWN_{enum_value}"


def _tf_dtype(enum_value: int) -> Optional[str]:
    """Canonical name of a TF DataType enum value, or None if we cannot build it
    (resource, variant, quantized, float8, int4, ... and all ref types)."""
    return canonical_dtype(_dtype_enum_name(enum_value))


def _unbuildable_reason(enum_values: Iterable[int]) -> str:
    """Reason for a dtype set none of whose members we can build."""
    names = [_dtype_enum_name(v) for v in enum_values]
    if any(n.startswith("DT_RESOURCE") for n in names):
        return REASON_RESOURCE
    if any(n.startswith("DT_VARIANT") for n in names):
        return REASON_VARIANT
    if any(n.startswith(("DT_QINT", "DT_QUINT")) for n in names):
        return REASON_QUANTIZED
    return REASON_UNBUILDABLE


def _buildable(enum_values: Iterable[int]) -> list[str]:
    out: list[str] = []
    for v in enum_values:
        c = _tf_dtype(v)
        if c is not None and c not in out:
            out.append(c)
    return out


# --------------------------------------------------------------------------- defaults

def _f32(x: float) -> float:
    """Shortest decimal that round-trips the float32 stored in an AttrValue
    (0.1 instead of 0.10000000149011612)."""
    import numpy as np
    return float(str(np.float32(x)))


def _decode_shape(shape_proto) -> Optional[list[int]]:
    if shape_proto.unknown_rank:
        return None
    return [int(d.size) for d in shape_proto.dim]


def decode_attr_value(attr_value, attr_type: str) -> Any:
    """Python value of an AttrValue of OpDef attr type ``attr_type``: ints,
    floats, str, lists, canonical dtype names (the ``DT_*`` name when we cannot
    build the dtype), shapes as lists of ints with -1 unknown (None = unknown
    rank)."""
    def dt(v: int) -> str:
        return _tf_dtype(v) or _dtype_enum_name(v)

    if attr_type.startswith("list("):
        lst = attr_value.list
        inner = attr_type[5:-1]
        if inner == "int":
            return [int(x) for x in lst.i]
        if inner == "float":
            return [_f32(x) for x in lst.f]
        if inner == "bool":
            return [bool(x) for x in lst.b]
        if inner == "string":
            return [x.decode("utf-8", "replace") for x in lst.s]
        if inner == "type":
            return [dt(x) for x in lst.type]
        if inner == "shape":
            return [_decode_shape(x) for x in lst.shape]
        return None
    if attr_type == "int":
        return int(attr_value.i)
    if attr_type == "float":
        return _f32(attr_value.f)
    if attr_type == "bool":
        return bool(attr_value.b)
    if attr_type == "string":
        return attr_value.s.decode("utf-8", "replace")
    if attr_type == "type":
        return dt(attr_value.type)
    if attr_type == "shape":
        return _decode_shape(attr_value.shape)
    return None


# --------------------------------------------------------------------------- building

class _Builder:
    """Builds the ApiSpec of one OpDef given the wrapper's parameter names."""

    def __init__(self, op_def, param_names: Optional[list[str]]):
        self.op_def = op_def
        self.attrs = {a.name: a for a in op_def.attr}
        self.reasons: list[str] = []
        self.notes: dict = {}
        # attrs TF infers from inputs
        self.inferred: set[str] = set()
        for a in op_def.input_arg:
            for ref in (a.type_attr, a.number_attr, a.type_list_attr):
                if ref:
                    self.inferred.add(ref)
        self.order: Optional[list[str]] = None  # wrapper keyword order, if known
        self.py_name = self._python_names(param_names)

    def _python_names(self, param_names: Optional[list[str]]) -> dict[str, str]:
        """OpDef name -> keyword name of the tf.raw_ops function. The generated
        wrapper lists inputs in OpDef order, then required attrs, then attrs with
        defaults (inferred attrs left out); a few of them are renamed by ApiDefs,
        so pair positionally."""
        od = self.op_def
        names = {a.name: a.name for a in list(od.input_arg) + list(od.attr)}
        if param_names is None:
            return names
        non_inf = [a for a in od.attr if a.name not in self.inferred]
        expected = ([a.name for a in od.input_arg]
                    + [a.name for a in non_inf if not a.HasField("default_value")]
                    + [a.name for a in non_inf if a.HasField("default_value")])
        params = [p for p in param_names if p != "name"]
        if len(params) != len(expected):
            self.notes["signature_mismatch"] = True
            return names
        renamed = {}
        for opdef_name, py in zip(expected, params):
            names[opdef_name] = py
            if py != opdef_name:
                renamed[py] = opdef_name
        if renamed:
            self.notes["opdef_names"] = renamed
        self.order = params
        return names

    # -- inputs
    def _input(self, arg) -> ArgSpec:
        name = self.py_name[arg.name]
        if arg.is_ref:
            self.reasons.append(REASON_REF_INPUT)
        dtypes: Optional[list[str]]
        if arg.type_list_attr:
            lattr = self.attrs[arg.type_list_attr]
            dtypes = self._dtype_set(lattr, input_like=True)
            return ArgSpec(name=name, kind=TENSOR_LIST, dtypes=dtypes,
                           min_length=int(lattr.minimum) if lattr.has_minimum else 0,
                           min_rank=MIN_RANK, max_rank=MAX_RANK)
        if arg.type_attr:
            dtypes, dtype_ref = None, self.py_name[arg.type_attr]
        else:
            dtype_ref = None
            c = _tf_dtype(arg.type)
            if c is None:
                self.reasons.append(_unbuildable_reason([arg.type]))
                dtypes = list(ALL_DTYPES)
            else:
                dtypes = [c]
        if arg.number_attr:
            nattr = self.attrs[arg.number_attr]
            return ArgSpec(name=name, kind=TENSOR_LIST, dtypes=dtypes, dtype_ref=dtype_ref,
                           length_ref=self.py_name[arg.number_attr],
                           min_length=int(nattr.minimum) if nattr.has_minimum else 0,
                           min_rank=MIN_RANK, max_rank=MAX_RANK)
        return ArgSpec(name=name, kind=TENSOR, dtypes=dtypes, dtype_ref=dtype_ref,
                       min_rank=MIN_RANK, max_rank=MAX_RANK)

    def _dtype_set(self, attr, input_like: bool) -> list[str]:
        """Buildable dtypes of a type / list(type) attr. No allowed list = any
        buildable dtype; an allowed list with none buildable marks the op."""
        if not attr.HasField("allowed_values"):
            return list(ALL_DTYPES)
        allowed = list(attr.allowed_values.list.type)
        dtypes = _buildable(allowed)
        if not dtypes:
            reason = _unbuildable_reason(allowed)
            if not input_like and reason in (REASON_RESOURCE, REASON_VARIANT):
                reason = reason.replace("input", "dtype")
            self.reasons.append(reason)
            return list(ALL_DTYPES)
        return dtypes

    # -- attrs
    def _attr(self, attr) -> Optional[ArgSpec]:
        name = self.py_name[attr.name]
        t = attr.type
        passed = attr.name not in self.inferred
        has_default = attr.HasField("default_value")
        default = decode_attr_value(attr.default_value, t) if has_default else None
        common = dict(name=name, passed=passed, has_default=has_default, default=default)
        if t in _UNREPRESENTABLE_ATTRS:
            if has_default and passed:
                # TF fills the default when the keyword is left out.
                self.notes.setdefault("omitted_attrs", []).append(name)
            else:
                self.reasons.append(_UNREPRESENTABLE_ATTRS[t])
            return None
        if t == "type":
            # a type attr used by an input: the input's allowed set
            input_like = not passed
            return ArgSpec(kind=DTYPE, allowed=self._dtype_set(attr, input_like), **common)
        if t == "list(type)":
            return ArgSpec(kind=DTYPE_LIST, allowed=self._dtype_set(attr, not passed),
                           min_length=int(attr.minimum) if attr.has_minimum else 0, **common)
        if t == "shape":
            return ArgSpec(kind=SHAPE, **common)
        if t in _SCALAR_ATTR_KINDS:
            kind = _SCALAR_ATTR_KINDS[t]
            spec = ArgSpec(kind=kind, **common)
            if attr.has_minimum and kind == INT:
                spec.minimum = int(attr.minimum)
            spec.allowed = self._allowed_values(attr)
            return spec
        if t in _LIST_ATTR_KINDS:
            spec = ArgSpec(kind=_LIST_ATTR_KINDS[t],
                           min_length=int(attr.minimum) if attr.has_minimum else 0, **common)
            spec.allowed = self._allowed_values(attr)
            return spec
        self.reasons.append(REASON_UNKNOWN_ATTR)
        return None

    @staticmethod
    def _allowed_values(attr) -> Optional[list]:
        if not attr.HasField("allowed_values"):
            return None
        lst = attr.allowed_values.list
        if lst.s:
            return [s.decode("utf-8", "replace") for s in lst.s]
        if lst.i:
            return [int(i) for i in lst.i]
        if lst.f:
            return [_f32(f) for f in lst.f]
        return None

    def build(self, api_name: str) -> ApiSpec:
        od = self.op_def
        if od.name.startswith("_"):
            self.reasons.append(REASON_INTERNAL)
        if any(a.is_ref for a in od.output_arg):
            self.reasons.append(REASON_REF_OUTPUT)
        args = [self._input(a) for a in od.input_arg]
        for attr in od.attr:
            spec = self._attr(attr)
            if spec is not None:
                args.append(spec)
        order = self.order
        if order is not None:
            pos = {n: i for i, n in enumerate(order)}
            # signature order for passed args; inferred attrs after, in OpDef order
            args.sort(key=lambda a: pos.get(a.name, len(pos)))
        else:
            self.reasons.append(REASON_NO_WRAPPER)
        self.notes["outputs"] = [a.name for a in od.output_arg]
        if od.is_stateful:
            self.notes["stateful"] = True
        unsupported = _first_reason(self.reasons)
        return ApiSpec(name=api_name, framework="tf", args=args, source="registry",
                       unsupported=unsupported, notes=self.notes)


# Most specific reason wins when an op has several problems.
_REASON_PRIORITY = (REASON_INTERNAL, REASON_NO_WRAPPER, REASON_REF_INPUT, REASON_REF_OUTPUT,
                    REASON_RESOURCE, REASON_VARIANT, "resource dtype", "variant dtype",
                    REASON_QUANTIZED, REASON_UNBUILDABLE, REASON_FUNC, REASON_TENSOR_ATTR,
                    REASON_LIST_SHAPE, REASON_UNKNOWN_ATTR)


def _first_reason(reasons: list[str]) -> Optional[str]:
    if not reasons:
        return None
    rank = {r: i for i, r in enumerate(_REASON_PRIORITY)}
    return min(reasons, key=lambda r: rank.get(r, len(rank)))


def spec_from_op_def(op_def, param_names: Optional[list[str]] = None) -> ApiSpec:
    """ApiSpec of one OpDef. ``param_names`` are the keyword names of the
    ``tf.raw_ops`` wrapper in order (None: no wrapper; the spec is then marked
    unsupported and uses OpDef names)."""
    return _Builder(op_def, param_names).build(PREFIX + op_def.name)


# --------------------------------------------------------------------------- public API

def _import_tf():
    from ..quiet import import_framework
    tf = import_framework("tensorflow")  # its start-up lines go to a log, not the terminal
    from tensorflow.python.framework import op_def_registry
    return tf, op_def_registry


def tf_raw_op_names() -> list[str]:
    """Public op names exposed in ``tf.raw_ops`` (without the prefix), sorted."""
    tf, _ = _import_tf()
    return sorted(n for n in dir(tf.raw_ops)
                  if not n.startswith("_") and callable(getattr(tf.raw_ops, n, None)))


#: layout of the spec cache file
SPEC_CACHE_FORMAT = 1


def _tf_version() -> Optional[str]:
    """The installed TensorFlow's version, read from package metadata (no import)."""
    from importlib import metadata
    for dist in ("tensorflow-cpu", "tensorflow", "tensorflow-intel", "tf-nightly-cpu", "tf-nightly"):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def spec_cache_path() -> Optional[Path]:
    """Where the TF spec table of this installation is cached; None when the
    TensorFlow version cannot be read without importing it."""
    version = _tf_version()
    if version is None:
        return None
    h = hashlib.sha256()
    h.update(f"{SPEC_CACHE_FORMAT} {version} {os.environ.get('TF_ENABLE_ONEDNN_OPTS', '')}".encode())
    here = Path(__file__).resolve().parent
    for src in sorted(here.glob("*.py")) + [here.parent / "model.py"]:
        try:
            h.update(src.read_bytes())
        except OSError:
            return None
    base = Path(os.environ.get("ACETEST_ML_CACHE_DIR") or "~/.cache/acetest-ml").expanduser()
    return base / f"tf-{version}-specs-{h.hexdigest()[:16]}.json"


def _read_spec_cache(path: Path) -> Optional[dict[str, ApiSpec]]:
    try:
        data = json.loads(path.read_text())
        if data.get("format") != SPEC_CACHE_FORMAT or not isinstance(data.get("specs"), list):
            return None
        specs = [ApiSpec.from_dict(d) for d in data["specs"]]
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None
    if not specs or any(s.framework != "tf" or not s.name.startswith(PREFIX) for s in specs):
        return None
    return {s.name: s for s in specs}


def _write_spec_cache(path: Path, specs: dict[str, ApiSpec]) -> None:
    payload = {"format": SPEC_CACHE_FORMAT, "tf_version": _tf_version(),
               "specs": [s.to_dict() for s in specs.values()]}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(payload, separators=(",", ":")))
        os.replace(tmp, path)
    except OSError:
        pass  # an unwritable cache folder: this process still has its specs


@functools.lru_cache(maxsize=1)
def _load() -> dict[str, ApiSpec]:
    path = spec_cache_path()
    if path is not None:
        cached = _read_spec_cache(path)
        if cached is not None:
            return cached
    specs = build_tf_specs()
    if path is not None:
        _write_spec_cache(path, specs)
    return specs


def build_tf_specs() -> dict[str, ApiSpec]:
    """Every spec, built from the running TensorFlow (imports it; no cache)."""
    tf, registry = _import_tf()
    specs: dict[str, ApiSpec] = {}
    for op in tf_raw_op_names():
        op_def = registry.get(op)
        if op_def is None:  # exposed but not registered: nothing to describe
            continue
        try:
            params = list(inspect.signature(getattr(tf.raw_ops, op)).parameters)
        except (TypeError, ValueError):
            params = None
        spec = spec_from_op_def(op_def, params)
        restrict_to_cpu_kernels(spec, op)
        specs[spec.name] = spec
    return specs


def restrict_to_cpu_kernels(spec: ApiSpec, op: str) -> None:
    """Narrow each dtype attribute to the dtypes a registered CPU kernel
    accepts (the OpDef allows more than this machine can run), and mark ops
    with no CPU kernel at all unsupported."""
    from tensorflow.python.framework import kernels
    try:
        cpu = [k for k in kernels.get_registered_kernels_for_op(op).kernel if k.device_type == "CPU"]
    except Exception:  # registry lookup failed: keep the OpDef's view
        return
    if not cpu:
        if spec.unsupported is None:
            spec.unsupported = REASON_NO_CPU_KERNEL
        return
    back = spec.notes.get("opdef_names", {})
    for a in spec.args:
        if a.kind not in (DTYPE, DTYPE_LIST) or not a.allowed:
            continue
        attr = back.get(a.name, a.name)
        ok: set[str] = set()
        for k in cpu:
            cons = [c for c in k.constraint if c.name == attr]
            if not cons:
                ok = set(a.allowed)  # some CPU kernel takes any type
                break
            for c in cons:
                ok |= {d for d in (_tf_dtype(t) for t in c.allowed_values.list.type) if d}
        narrowed = [d for d in a.allowed if d in ok]
        if narrowed and len(narrowed) < len(a.allowed):
            spec.notes.setdefault("cpu_kernel_dtypes", {})[a.name] = len(a.allowed) - len(narrowed)
            a.allowed = narrowed


def load_tf_specs() -> dict[str, ApiSpec]:
    """``{"tf.raw_ops.<Op>": ApiSpec}`` for every public ``tf.raw_ops`` op.
    Built once per process; the dict is a fresh copy, the specs are shared
    (do not mutate them)."""
    return dict(_load())


def get_tf_spec(name: str) -> ApiSpec:
    """The spec of ``tf.raw_ops.<Op>``; ``name`` may also be the bare op name.
    Raises UnknownApiError (with up to 3 close matches) for unknown names."""
    specs = _load()
    key = name if name.startswith(PREFIX) else PREFIX + name
    spec = specs.get(key)
    if spec is not None:
        return spec
    raise UnknownApiError(_unknown_message(name, specs))


def _unknown_message(name: str, specs: dict[str, ApiSpec]) -> str:
    bare = name[len(PREFIX):] if name.startswith(PREFIX) else name
    ops = [k[len(PREFIX):] for k in specs]
    by_lower: dict[str, str] = {}
    for op in ops:
        by_lower.setdefault(op.lower(), op)
    close = difflib.get_close_matches(bare.lower(), list(by_lower), n=3, cutoff=0.6)
    msg = f"unknown TensorFlow op {name!r}"
    if close:
        msg += "; did you mean " + ", ".join(PREFIX + by_lower[c] for c in close) + "?"
    return msg


def spec_counts(specs: dict[str, ApiSpec] | Iterable[ApiSpec], top: int = 10) -> dict:
    """``{"total": n, "supported": n, "unsupported": n, "reasons": [(reason,
    count), ...]}`` with the ``top`` most common unsupported reasons."""
    items = list(specs.values()) if isinstance(specs, dict) else list(specs)
    reasons = Counter(s.unsupported for s in items if s.unsupported)
    supported = sum(1 for s in items if s.supported)
    return {"total": len(items), "supported": supported, "unsupported": len(items) - supported,
            "reasons": reasons.most_common(top)}
