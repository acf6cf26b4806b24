"""ApiSpecs for PyTorch ``aten`` operators, read from the JIT schema registry.

Every ``aten::`` schema returned by ``torch._C._jit_get_all_schemas()`` becomes
one :class:`~acetest_ml.model.ApiSpec` named ``torch.ops.aten.<op>`` (default
overload) or ``torch.ops.aten.<op>.<overload>``.  Argument types map to the
kinds of :mod:`acetest_ml.model`; schemas we cannot build calls for keep a short
fixed reason in ``ApiSpec.unsupported`` so that counts group by reason.

Tensor dtypes come from PyTorch's OpInfo database
(``torch.testing._internal.common_methods_invocations.op_db``) when an OpInfo
exists for the operator.  Importing ``op_db`` is slow and has global side
effects, so the name -> dtypes table is computed once in a child process and
cached as JSON under ``~/.cache/acetest-ml/`` (``$ACETEST_ML_CACHE_DIR``
overrides the directory).

Notes recorded on each spec (``ApiSpec.notes``):

``schema``           the schema text.
``dtype_source``     ``"opinfo"`` or ``"default"``.
``same_dtype_group`` tensor arguments that should share one dtype (every
                     tensor argument that is not an index or mask tensor).
``omitted``          Layout/Device/MemoryFormat/Generator/Stream arguments left
                     out of the spec (never passed, i.e. their default/None).
``pass_none``        omitted arguments that have no schema default: the call
                     must pass them explicitly as ``None`` (by keyword).
``keyword_forced``   arguments marked keyword_only although positional in the
                     schema, because an omitted positional argument precedes
                     them (their position cannot be derived from ``args``).
``none_items``       ``Tensor?[]`` arguments (modelled as TENSOR_LIST; items are
                     never None in generated inputs).

The worker calls an op from these notes through the one call planner,
:func:`acetest_ml.materialize.plan_call`.
"""
from __future__ import annotations

import difflib
import json
import os
import re
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Optional

from ..errors import UnknownApiError
from ..model import (ALL_DTYPES, ApiSpec, canonical_dtype, ArgSpec, BOOL, BOOL_LIST, DTYPE, DTYPE_LIST, FLOAT,
                     FLOAT_LIST, INT, INT_LIST, SCALAR, STR, STR_LIST, TENSOR, TENSOR_LIST)

PREFIX = "torch.ops.aten."
CACHE_FORMAT = 1

#: dtypes given to tensors of operators without an OpInfo (floats first).
DEFAULT_DTYPES = ["float32", "float64", "int64", "int32", "bool"]
#: dtypes of index-like tensor arguments (recognised by name).
INDEX_DTYPES = ["int64", "int32"]
MASK_DTYPES = ["bool"]

INDEX_ARG_NAMES = frozenset({
    "index", "indices", "offsets", "batch_sizes", "crow_indices", "col_indices", "ccol_indices",
    "row_indices", "compressed_indices", "plain_indices", "input_lengths", "target_lengths",
    "lengths", "offset2bag", "bag_size", "maximum_indices", "LU_pivots", "pivots", "sorter",
    "cu_seqlens_q", "cu_seqlens_k", "seqused_k", "max_indices",
})
MASK_ARG_NAMES = frozenset({"mask", "condition"})
# (operator name prefix, argument name) pairs whose tensor holds class indices.
_INDEX_ARGS_BY_OP = (
    ("nll_loss", "target"), ("cross_entropy_loss", "target"), ("multi_margin_loss", "target"),
    ("multilabel_margin_loss", "target"), ("ctc_loss", "targets"), ("_ctc_loss", "targets"),
)


def _index_like(op: str, arg: str) -> bool:
    """Whether tensor argument ``arg`` of ``op`` holds indices (int dtypes,
    outside the op's shared dtype group)."""
    return arg in INDEX_ARG_NAMES or any(op.startswith(p) and arg == a for p, a in _INDEX_ARGS_BY_OP)

# Simple (non-list) schema type name -> argument kind.
_SCALAR_KINDS = {
    "Tensor": TENSOR, "int": INT, "SymInt": INT, "float": FLOAT, "bool": BOOL, "str": STR,
    "ScalarType": DTYPE, "number": SCALAR, "Scalar": SCALAR,
}
# Item type of a list -> list kind.  Scalar[] lists are passed as python floats.
_LIST_KINDS = {
    "Tensor": TENSOR_LIST, "Optional[Tensor]": TENSOR_LIST, "int": INT_LIST, "SymInt": INT_LIST,
    "float": FLOAT_LIST, "bool": BOOL_LIST, "str": STR_LIST, "ScalarType": DTYPE_LIST,
    "number": FLOAT_LIST, "Scalar": FLOAT_LIST,
}
# Types we never build: left out of the spec when optional or defaulted.
_OMITTABLE = frozenset({"Layout", "Device", "MemoryFormat", "Generator", "Stream"})

# Known value sets of string arguments, by argument name.  The schema default
# (when there is one) is always added.
_STR_ALLOWED = {
    "norm": ["forward", "backward", "ortho"],
    "reduce": ["sum", "prod", "mean", "amax", "amin"],
    "interpolation": ["linear", "lower", "higher", "midpoint", "nearest"],
    "rounding_mode": ["trunc", "floor"],
    "UPLO": ["L", "U"],
    "padding": ["valid", "same"],
    "approximate": ["none", "tanh"],
    "side": ["left", "right"],
    "padding_side": ["left", "right"],
    "pad_mode": ["reflect", "constant", "replicate", "circular"],
    "indexing": ["ij", "xy"],
    "driver": ["gelsy", "gelsd", "gelss", "gels"],
}
# ``mode`` means different things; pick the value set by the schema default.
_STR_MODE_BY_DEFAULT = {
    "nearest": ["nearest", "bilinear", "bicubic"],
    "reduced": ["reduced", "complete", "r"],
    "constant": ["constant", "reflect", "replicate", "circular"],
}

# c10::ScalarType codes (used by schema defaults of ScalarType arguments).
_SCALAR_TYPE_CODES = {0: "uint8", 1: "int8", 2: "int16", 3: "int32", 4: "int64", 5: "float16",
                      6: "float32", 7: "float64", 9: "complex64", 10: "complex128", 11: "bool",
                      15: "bfloat16"}

_TYPEVAR = re.compile(r"^t\d*$|^tVal$|^Any$")

_specs_cache: Optional[dict[str, ApiSpec]] = None
_opinfo_cache: Optional[dict[str, list[str]]] = None


# --------------------------------------------------------------------------- dtypes

def _sorted_dtypes(names: Iterable[str]) -> list[str]:
    order = {n: i for i, n in enumerate(ALL_DTYPES)}
    return sorted(set(names), key=lambda n: order[n])


def _opinfo_keys(op: Any) -> set[str]:
    """aten operator names an OpInfo (and its aliases) may stand for."""
    keys: set[str] = set()
    names = [getattr(op, "name", "")] + [getattr(a, "name", "") for a in getattr(op, "aliases", ())]
    for name in names:
        if not name:
            continue
        keys.add(name)
        keys.add(name.replace(".", "_"))
        if name.startswith("nn.functional."):
            keys.add(name[len("nn.functional."):])
    aten = getattr(op, "aten_name", None)
    if aten:
        keys.add(aten)
    return {k for k in keys if "." not in k}


def compute_opinfo_dtypes() -> dict[str, list[str]]:
    """Import ``op_db`` (slow, with global side effects: run it in a child
    process, see :func:`load_opinfo_dtypes`) and map every aten name an OpInfo
    covers to the union of its CPU-supported canonical dtypes."""
    from torch.testing._internal.common_methods_invocations import op_db

    table: dict[str, set[str]] = {}
    for op in op_db:
        try:
            raw = op.supported_dtypes("cpu")
        except Exception:  # older OpInfos without per-device dtypes
            raw = getattr(op, "dtypes", ())
        names = {c for c in (canonical_dtype(d) for d in raw) if c}
        if not names:
            continue
        for key in _opinfo_keys(op):
            table.setdefault(key, set()).update(names)
    return {k: _sorted_dtypes(v) for k, v in sorted(table.items())}


def opinfo_cache_path() -> Path:
    import torch

    base = Path(os.environ.get("ACETEST_ML_CACHE_DIR") or "~/.cache/acetest-ml").expanduser()
    version = re.sub(r"[^A-Za-z0-9.+_-]", "_", torch.__version__)
    return base / f"torch-{version}-opinfo-dtypes.json"


def _read_cache(path: Path, version: str) -> Optional[dict[str, list[str]]]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT \
            or data.get("torch_version") != version or not isinstance(data.get("dtypes"), dict):
        return None
    table = data["dtypes"]
    for k, v in table.items():
        if not isinstance(k, str) or not isinstance(v, list) or not all(d in ALL_DTYPES for d in v):
            return None
    return table


def _compute_in_child(timeout: float = 600.0) -> Optional[dict[str, list[str]]]:
    """Run :func:`compute_opinfo_dtypes` in a fresh interpreter; None on failure."""
    pkg_parent = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = pkg_parent + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = "1"
    fd, out = tempfile.mkstemp(suffix=".json", prefix="acetest-opinfo-")
    os.close(fd)
    try:
        proc = subprocess.run([sys.executable, "-m", "acetest_ml.spec.torch", "--opinfo-dtypes", out],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              timeout=timeout)
        if proc.returncode != 0:
            return None
        table = json.loads(Path(out).read_text())
        return table if isinstance(table, dict) else None
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return None
    finally:
        try:
            os.unlink(out)
        except OSError:
            pass


def load_opinfo_dtypes(path: Optional[Path] = None, *, refresh: bool = False) -> dict[str, list[str]]:
    """aten op name -> CPU dtypes from OpInfo, read from the JSON cache at
    ``path`` (default :func:`opinfo_cache_path`); recomputed (in a child
    process) and rewritten when the file is missing, corrupt, from another
    torch version, or ``refresh`` is set.  Returns ``{}`` if OpInfo cannot be
    imported (then every op uses :data:`DEFAULT_DTYPES`)."""
    import torch

    global _opinfo_cache
    default_path = path is None
    if default_path and _opinfo_cache is not None and not refresh:
        return _opinfo_cache
    path = Path(path) if path is not None else opinfo_cache_path()
    table = None if refresh else _read_cache(path, torch.__version__)
    if table is None:
        table = _compute_in_child()
        if table is None:
            return {}
        payload = {"format": CACHE_FORMAT, "torch_version": torch.__version__, "dtypes": table}
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + f".tmp{os.getpid()}")
            tmp.write_text(json.dumps(payload, indent=0, sort_keys=True))
            os.replace(tmp, path)
        except OSError:
            pass  # read-only home: still usable for this process
    if default_path:
        _opinfo_cache = table
    return table


# --------------------------------------------------------------------------- schema -> spec

def _parse_type(t: str) -> tuple[bool, bool, str]:
    """``"Optional[List[int]]"`` -> (optional, is_list, item type)."""
    optional = False
    if t.startswith("Optional[") and t.endswith("]"):
        optional, t = True, t[len("Optional["):-1]
    if t.startswith("List[") and t.endswith("]"):
        return optional, True, t[len("List["):-1]
    return optional, False, t


def _type_label(item: str) -> str:
    """Short fixed phrase naming an unbuildable type (for reasons)."""
    if item.startswith("__torch__."):
        return "custom class"
    if _TYPEVAR.match(item):
        return "generic"
    if item == "Optional[Tensor]":
        return "Tensor?"
    return re.split(r"[\[\(]", item, maxsplit=1)[0]


def _str_allowed(name: str, default: Any) -> Optional[list[str]]:
    if name == "mode":
        allowed = list(_STR_MODE_BY_DEFAULT.get(default, []))
    else:
        allowed = list(_STR_ALLOWED.get(name, []))
    if isinstance(default, str) and default not in allowed:
        allowed.append(default)
    return allowed or None


def _convert_default(kind: str, value: Any, length: Optional[int]) -> Any:
    if value is None:
        return None
    if kind in (DTYPE,) and isinstance(value, int) and not isinstance(value, bool):
        return _SCALAR_TYPE_CODES.get(value, value)
    if kind in (INT_LIST, FLOAT_LIST, BOOL_LIST) and not isinstance(value, (list, tuple)):
        return [value] * (length or 1)
    if isinstance(value, tuple):
        return list(value)
    return value


def _is_out_variant(schema: Any) -> bool:
    ov = schema.overload_name
    return ov == "out" or ov.endswith("_out") or any(a.is_out for a in schema.arguments)


def _mutates(schema: Any) -> bool:
    return any(a.alias_info is not None and a.alias_info.is_write for a in schema.arguments)


def _in_dispatcher(schema: Any) -> bool:
    """Whether the c10 dispatcher knows the schema.  The rest are TorchScript
    interpreter builtins (``aten::add.int``, ``aten::to.prim_Device``...), whose
    ``torch.ops`` wrappers are not meant to be called from Python (some read
    uninitialised values and hang)."""
    import torch

    try:
        torch._C._dispatch_find_schema_or_throw(schema.name, schema.overload_name)
    except RuntimeError:
        return False
    return True


def _has_tensor(types: Iterable[str]) -> bool:
    return any("Tensor" in t for t in types)


def _spec_name(op: str, overload: str) -> str:
    return PREFIX + op + (f".{overload}" if overload else "")


def spec_from_schema(schema: Any, opinfo: Optional[dict[str, list[str]]] = None) -> ApiSpec:
    """One ApiSpec from one ``torch._C.FunctionSchema`` of an ``aten::`` op."""
    op = schema.name.split("::", 1)[1]
    spec = ApiSpec(name=_spec_name(op, schema.overload_name), framework="torch", source="registry")
    spec.notes["schema"] = str(schema)

    reason: Optional[str] = None
    if _is_out_variant(schema):
        reason = "out variant"
    elif (op.endswith("_") and not op.endswith("__")) or _mutates(schema):
        reason = "mutates input"
    elif not _in_dispatcher(schema):
        reason = "JIT-only op"

    op_dtypes = (opinfo or {}).get(op)
    dtypes = list(op_dtypes) if op_dtypes else list(DEFAULT_DTYPES)
    spec.notes["dtype_source"] = "opinfo" if op_dtypes else "default"

    omitted: list[str] = []
    pass_none: list[str] = []
    forced: list[str] = []
    none_items: list[str] = []
    gap_before = False  # an omitted positional argument precedes the current one
    for a in schema.arguments:
        optional, is_list, item = _parse_type(str(a.real_type))
        has_default = bool(a.has_default_value())
        if item in _OMITTABLE and not is_list:
            if optional or has_default:
                omitted.append(a.name)
                if not has_default:
                    pass_none.append(a.name)
                if not a.kwarg_only:
                    gap_before = True
                continue
            reason = reason or f"{item} arg"
            continue
        kind = (_LIST_KINDS if is_list else _SCALAR_KINDS).get(item)
        if kind is None:
            reason = reason or f"{_type_label(item)}{'[]' if is_list else ''} arg"
            continue
        length = a.N if is_list and a.N is not None else None
        default = _convert_default(kind, a.default_value, length) if has_default else None
        spec_arg = ArgSpec(name=a.name, kind=kind, optional=optional, length=length,
                           has_default=has_default, default=default,
                           keyword_only=bool(a.kwarg_only))
        if gap_before and not a.kwarg_only:
            spec_arg.keyword_only = True
            forced.append(a.name)
        if is_list and item == "Optional[Tensor]":
            none_items.append(a.name)
        if kind in (TENSOR, TENSOR_LIST):
            if _index_like(op, a.name):
                spec_arg.dtypes = list(INDEX_DTYPES)
            elif a.name in MASK_ARG_NAMES:
                spec_arg.dtypes = list(MASK_DTYPES)
            else:
                spec_arg.dtypes = list(dtypes)
        elif kind in (DTYPE, DTYPE_LIST):
            spec_arg.dtypes = list(dtypes)
        elif kind == STR:
            spec_arg.allowed = _str_allowed(a.name, default)
        spec.args.append(spec_arg)

    if reason is None:
        in_types = [str(a.real_type) for a in schema.arguments]
        out_types = [str(r.real_type) for r in schema.returns]
        if not _has_tensor(in_types) and not _has_tensor(out_types):
            reason = "no tensor in or out"

    group = [x.name for x in spec.args if x.kind in (TENSOR, TENSOR_LIST)
             and not _index_like(op, x.name) and x.name not in MASK_ARG_NAMES]
    spec.notes["same_dtype_group"] = group
    if omitted:
        spec.notes["omitted"] = omitted
    if pass_none:
        spec.notes["pass_none"] = pass_none
    if forced:
        spec.notes["keyword_forced"] = forced
    if none_items:
        spec.notes["none_items"] = none_items
    spec.unsupported = reason
    return spec


def load_torch_specs(*, opinfo: Optional[dict[str, list[str]]] = None) -> dict[str, ApiSpec]:
    """Every ``aten::`` schema as an ApiSpec, keyed by its name.  Cached per
    process when ``opinfo`` is not given (it defaults to
    :func:`load_opinfo_dtypes`).  Callers must not mutate the returned specs."""
    global _specs_cache
    use_cache = opinfo is None
    if use_cache and _specs_cache is not None:
        return _specs_cache
    import torch

    table = load_opinfo_dtypes() if opinfo is None else opinfo
    specs: dict[str, ApiSpec] = {}
    for schema in torch._C._jit_get_all_schemas():
        if not schema.name.startswith("aten::"):
            continue
        spec = spec_from_schema(schema, table)
        specs.setdefault(spec.name, spec)
    if use_cache:
        _specs_cache = specs
    return specs


def _normalise(name: str) -> str:
    n = name.strip()
    for prefix in (PREFIX, "aten::", "aten."):
        if n.startswith(prefix):
            n = n[len(prefix):]
            break
    op, _, overload = n.partition(".")
    if overload == "default":
        overload = ""
    return _spec_name(op, overload)


def get_torch_spec(name: str) -> ApiSpec:
    """The spec of ``name`` ("torch.ops.aten.conv2d", "aten::conv2d", "conv2d",
    "torch.ops.aten.add.Tensor", "add.Tensor", "...conv2d.default").
    Raises UnknownApiError (one line, up to 3 close matches) otherwise."""
    specs = load_torch_specs()
    key = _normalise(name)
    if key in specs:
        return specs[key]
    op = key[len(PREFIX):].split(".", 1)[0]
    close = [n for n in specs if n == PREFIX + op or n.startswith(PREFIX + op + ".")]
    close.sort(key=lambda n: (not specs[n].supported, n))
    if not close:
        short = [n[len(PREFIX):] for n in specs]
        close = [PREFIX + n for n in
                 difflib.get_close_matches(key[len(PREFIX):], short, n=3, cutoff=0.6)]
    hint = f"; did you mean: {', '.join(close[:3])}" if close else "; no close match"
    raise UnknownApiError(f"unknown torch API {name!r}{hint}")


def spec_counts(specs: dict[str, ApiSpec] | Iterable[ApiSpec], top: int = 10) -> dict:
    """``{"total", "supported", "unsupported", "reasons": {reason: n} (most
    frequent first), "top_reasons": [[reason, n], ...] (at most ``top``)}``."""
    items = list(specs.values()) if isinstance(specs, dict) else list(specs)
    reasons = Counter(s.unsupported for s in items if s.unsupported)
    ranked = reasons.most_common()
    return {"total": len(items), "supported": sum(1 for s in items if s.supported),
            "unsupported": sum(reasons.values()), "reasons": dict(ranked),
            "top_reasons": [[r, n] for r, n in ranked[:top]]}


def _main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "--opinfo-dtypes":
        Path(argv[1]).write_text(json.dumps(compute_opinfo_dtypes()))
        return 0
    if argv == ["--counts"]:
        print(json.dumps(spec_counts(load_torch_specs()), indent=1))
        return 0
    print("usage: python -m acetest_ml.spec.torch --counts | --opinfo-dtypes OUT.json", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
