"""Core data model shared by every stage of the pipeline.

ApiSpec      what one API accepts (one ArgSpec per argument, in call order).
AbstractInput  one fully decided input: a value for every argument, where a
               tensor is described by dtype + shape (+ value range), never by
               its elements. Element values are derived from ``value_seed``.

Everything here is plain data and serialises to JSON (``to_json``/``from_json``)
so the store, the worker protocol, reproducers and the classifier all agree.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, asdict
from typing import Any, Optional

# Canonical dtype names used everywhere (numpy-style spelling).
FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")
INT_DTYPES = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")
COMPLEX_DTYPES = ("complex64", "complex128")
OTHER_DTYPES = ("bool", "string")
ALL_DTYPES = FLOAT_DTYPES + INT_DTYPES + COMPLEX_DTYPES + OTHER_DTYPES
DTYPE_CODE = {name: i for i, name in enumerate(ALL_DTYPES)}

# Argument kinds of an ArgSpec.
TENSOR = "tensor"            # one tensor
TENSOR_LIST = "tensor_list"  # list of tensors (TF number/type-list attrs, torch Tensor[])
INT = "int"
FLOAT = "float"
BOOL = "bool"
STR = "str"
DTYPE = "dtype"              # a dtype value (TF type attr, torch ScalarType)
SCALAR = "scalar"            # torch Scalar: int or float
INT_LIST = "int_list"
FLOAT_LIST = "float_list"
BOOL_LIST = "bool_list"
STR_LIST = "str_list"
DTYPE_LIST = "dtype_list"
SHAPE = "shape"              # TF shape attr: list of ints (-1 = unknown)
ARG_KINDS = (TENSOR, TENSOR_LIST, INT, FLOAT, BOOL, STR, DTYPE, SCALAR,
             INT_LIST, FLOAT_LIST, BOOL_LIST, STR_LIST, DTYPE_LIST, SHAPE)
LIST_KINDS = (TENSOR_LIST, INT_LIST, FLOAT_LIST, BOOL_LIST, STR_LIST, DTYPE_LIST, SHAPE)


def safe_name(api: str) -> str:
    """File-system-safe stem for an API name (models, crash folders)."""
    s = "".join(c if c.isalnum() or c in "._-" else "_" for c in api).strip("._")
    return s or "api"


def dtype_kind(dtype: str) -> str:
    """'f' float, 'i' signed int, 'u' unsigned, 'c' complex, 'b' bool, 's' string."""
    if dtype in FLOAT_DTYPES:
        return "f"
    if dtype.startswith("uint"):
        return "u"
    if dtype.startswith("int"):
        return "i"
    if dtype.startswith("complex"):
        return "c"
    if dtype == "bool":
        return "b"
    return "s"


@dataclass
class ArgSpec:
    """One argument of an API.

    kind        one of ARG_KINDS.
    dtypes      tensor kinds: allowed dtypes (None = any supported dtype).
    dtype_ref   tensor kinds: name of the DTYPE argument whose value this
                tensor's dtype follows (TF ``T`` attributes); the referenced
                argument holds the allowed set.
    min_rank/max_rank  tensor kinds: rank bounds.
    length      list kinds: fixed length (torch ``int[2]``), else None.
    min_length  list kinds: lower bound of the length.
    length_ref  list kinds: name of the INT argument that gives the length
                (TF ``number_attr``).
    allowed     enumerated allowed values (strings, ints) or None.
    minimum/maximum  numeric bounds of the value (or of list items).
    optional    the argument may be None / omitted.
    has_default, default  the registry default, when there is one.
    keyword_only  torch: keyword-only in the schema. TF: every arg is keyword.
    passed      False for arguments that are never passed to the call (TF
                dtype attrs that TensorFlow infers from the tensors).
    """

    name: str
    kind: str
    dtypes: Optional[list[str]] = None
    dtype_ref: Optional[str] = None
    min_rank: int = 0
    max_rank: int = 6
    length: Optional[int] = None
    min_length: int = 0
    length_ref: Optional[str] = None
    allowed: Optional[list[Any]] = None
    minimum: Optional[float] = None
    maximum: Optional[float] = None
    optional: bool = False
    has_default: bool = False
    default: Any = None
    keyword_only: bool = False
    passed: bool = True

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items()
                if v is not None and not (k == "passed" and v) and not (k == "keyword_only" and not v)
                and not (k == "optional" and not v) and not (k == "has_default" and not v)}


@dataclass
class ApiSpec:
    """What one API accepts. ``name`` is the user-facing callable name:
    ``tf.raw_ops.<Op>``, ``torch.ops.aten.<op>`` or ``torch.ops.aten.<op>.<overload>``.
    ``unsupported`` is a short reason when we cannot build calls for it."""

    name: str
    framework: str  # "tf" | "torch"
    args: list[ArgSpec] = field(default_factory=list)
    source: str = "registry"  # "registry" | "acetest"
    unsupported: Optional[str] = None
    notes: dict = field(default_factory=dict)

    def arg(self, name: str) -> ArgSpec:
        for a in self.args:
            if a.name == name:
                return a
        raise KeyError(f"{self.name} has no argument {name!r}")

    def has_arg(self, name: str) -> bool:
        return any(a.name == name for a in self.args)

    @property
    def supported(self) -> bool:
        return self.unsupported is None

    def to_dict(self) -> dict:
        d: dict[str, Any] = {"name": self.name, "framework": self.framework, "source": self.source,
             "args": [a.to_dict() for a in self.args]}
        if self.unsupported:
            d["unsupported"] = self.unsupported
        if self.notes:
            d["notes"] = self.notes
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ApiSpec":
        return cls(name=d["name"], framework=d["framework"], source=d.get("source", "registry"),
                   args=[ArgSpec(**a) for a in d.get("args", [])],
                   unsupported=d.get("unsupported"), notes=d.get("notes", {}))


@dataclass(frozen=True)
class TensorDesc:
    """A tensor as the abstraction sees it: dtype, shape and the range its
    element values are drawn from (``low``/``high``, inclusive for ints).
    ``values`` fixes the elements explicitly (flattened), for small integer
    tensors whose contents the constraints decide (shapes, axes, paddings)."""

    dtype: str
    shape: tuple
    low: Optional[float] = None
    high: Optional[float] = None
    values: Optional[tuple] = None

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def numel(self) -> int:
        return int(math.prod(self.shape)) if self.shape else 1

    def to_json(self) -> dict:
        d: dict = {"dtype": self.dtype, "shape": list(self.shape)}
        if self.low is not None:
            d["low"] = self.low
        if self.high is not None:
            d["high"] = self.high
        if self.values is not None:
            d["values"] = list(self.values)
        return {"__tensor__": d}


@dataclass(frozen=True)
class DTypeValue:
    """A dtype passed as a value (TF type attribute, torch ScalarType)."""

    name: str

    def to_json(self) -> dict:
        return {"__dtype__": self.name}


# Other spellings of the canonical dtype names: ACETest / TF Python names,
# torch aliases, and TF DataType enum names (``DT_*``).
_DTYPE_ALIASES = {
    "half": "float16", "float": "float32", "double": "float64", "int": "int32",
    "uint": "uint32", "complex": "complex64", "long": "int64", "short": "int16",
    "cfloat": "complex64", "cdouble": "complex128",
    "DT_HALF": "float16", "DT_FLOAT": "float32", "DT_DOUBLE": "float64", "DT_BFLOAT16": "bfloat16",
    "DT_INT8": "int8", "DT_INT16": "int16", "DT_INT32": "int32", "DT_INT64": "int64",
    "DT_UINT8": "uint8", "DT_UINT16": "uint16", "DT_UINT32": "uint32", "DT_UINT64": "uint64",
    "DT_BOOL": "bool", "DT_COMPLEX64": "complex64", "DT_COMPLEX128": "complex128",
    "DT_STRING": "string",
}
#: quantized dtypes: no canonical counterpart (the data model has none)
QUANTIZED_DTYPES = ("qint8", "qint16", "qint32", "quint8", "quint16")


def canonical_dtype(dtype: Any) -> Optional[str]:
    """The canonical name (one of ALL_DTYPES) of a dtype spelling, or None
    when the data model has no counterpart (quantized, float8, complex32,
    TF reference types...). Accepts canonical names, ``tf.``/``torch.``
    prefixed names, framework dtype objects (``torch.float32``,
    ``tf.float32``: their ``str``/``name``), ACETest / TF aliases (``half``,
    ``double``, ``int``...) and TF ``DT_*`` enum names."""
    if isinstance(dtype, bool) or dtype is None:
        return None
    if isinstance(dtype, DTypeValue):
        return dtype.name if dtype.name in DTYPE_CODE else None
    name = dtype if isinstance(dtype, str) else getattr(dtype, "name", None)
    if not isinstance(name, str):
        name = str(dtype)
    n = name.strip()
    for prefix in ("tf.", "torch."):
        if n.startswith(prefix):
            n = n[len(prefix):]
            break
    n = _DTYPE_ALIASES.get(n, n)
    return n if n in DTYPE_CODE else None


def encode_value(v: Any) -> Any:
    if isinstance(v, (TensorDesc, DTypeValue)):
        return v.to_json()
    if isinstance(v, (list, tuple)):
        return [encode_value(x) for x in v]
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return {"__float__": repr(v)}
    return v


def decode_value(v: Any) -> Any:
    if isinstance(v, dict):
        if "__tensor__" in v:
            t = v["__tensor__"]
            vals = t.get("values")
            return TensorDesc(dtype=t["dtype"], shape=tuple(t["shape"]), low=t.get("low"),
                              high=t.get("high"), values=tuple(vals) if vals is not None else None)
        if "__dtype__" in v:
            return DTypeValue(v["__dtype__"])
        if "__float__" in v:
            return float(v["__float__"])
        raise ValueError(f"unknown tagged value {v!r}")
    if isinstance(v, list):
        return [decode_value(x) for x in v]
    return v


@dataclass
class AbstractInput:
    """One run's complete input. ``args`` maps argument name -> value, in the
    spec's call order; an omitted optional argument is absent from ``args``.
    ``value_seed`` decides tensor element values. ``solved`` names the
    arguments (or argument parts, ``name.rank``, ``name.shape``) the solver
    decided; the rest were filled at random. ``origin`` records where the
    input came from (constraint set id, sampler index)."""

    api: str
    args: dict[str, Any]
    value_seed: int = 0
    solved: list[str] = field(default_factory=list)
    origin: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"api": self.api, "args": {k: encode_value(v) for k, v in self.args.items()},
                "value_seed": self.value_seed, "solved": list(self.solved), "origin": dict(self.origin)}

    def dumps(self) -> str:
        return json.dumps(self.to_json(), sort_keys=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, d: dict) -> "AbstractInput":
        return cls(api=d["api"], args={k: decode_value(v) for k, v in d["args"].items()},
                   value_seed=int(d.get("value_seed", 0)), solved=list(d.get("solved", [])),
                   origin=dict(d.get("origin", {})))

    @classmethod
    def loads(cls, s: str) -> "AbstractInput":
        return cls.from_json(json.loads(s))

    def key(self) -> str:
        """Identity of the abstract input for de-duplication (ignores the
        value seed and provenance)."""
        return json.dumps({k: encode_value(v) for k, v in self.args.items()}, sort_keys=True,
                          separators=(",", ":"))

    def tensors(self) -> dict[str, TensorDesc]:
        """Every tensor in the input, list items named ``name[i]``."""
        out: dict[str, TensorDesc] = {}
        for k, v in self.args.items():
            if isinstance(v, TensorDesc):
                out[k] = v
            elif isinstance(v, list):
                for i, x in enumerate(v):
                    if isinstance(x, TensorDesc):
                        out[f"{k}[{i}]"] = x
        return out
