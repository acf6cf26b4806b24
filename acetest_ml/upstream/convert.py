"""Turn the argument values the original ACETest Tester generates for one run
into our :class:`~acetest_ml.model.AbstractInput`, and its argument list into
an :class:`~acetest_ml.model.ApiSpec`.

Upstream keeps one ``Argument`` object per op argument (``APIManager.arg_list``).
After ``APIManager.generate_random_args()`` each has ``arg_value``, an instance
of one of upstream's value classes (``IntValue``, ``FloatValue``, ``BoolValue``,
``StringValue``, ``TypeValue``, ``TensorValue``, ``ListValue``), and ``arg_prop``
(the op_json properties, with ``is_mid`` for arguments that are not passed).
Dtypes are TensorFlow spellings (``"tf.float32"``, ``"tf.half"``, ``"tf.qint8"``)
in both framework modes; for PyTorch upstream converts them when it writes the
call. The string ``"&NONE"`` stands for "pass None".

Nothing here imports upstream: values are recognised by their class name, so
the same functions serve the original Tester, the ncsu-swat fork and the
stand-in used by the tests.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Optional

from ..model import (canonical_dtype, BOOL, BOOL_LIST, DTYPE, DTYPE_LIST, FLOAT, FLOAT_LIST, INT,
                     INT_LIST, STR, STR_LIST, TENSOR, TENSOR_LIST, AbstractInput, ApiSpec,
                     ArgSpec, DTypeValue, TensorDesc)

NONE_MARK = "&NONE"

# Quantized types have no canonical name of their own; upstream's inputs of them
# map to the integer type of the same width and are listed in
# ``origin["lossy_dtypes"]``.
_QUANTIZED_AS = {"qint8": "int8", "qint16": "int16", "qint32": "int32",
                 "quint8": "uint8", "quint16": "uint16"}
_LOSSY = set(_QUANTIZED_AS)
# What upstream's PyTorch mode really creates for a (TF-spelled) dtype: unsigned
# and quantized ints become signed torch ints, string tensors become int32.
_TORCH_EFFECTIVE = {
    "uint16": "int16", "uint32": "int32", "uint64": "int64",
    "qint8": "int8", "qint16": "int8", "qint32": "int32", "quint8": "uint8",
    "quint16": "uint16", "string": "int32",
}


def upstream_dtype(name: str, framework: str = "tf") -> tuple[str, bool]:
    """The dtype upstream really creates for one of its dtype spellings
    (``"tf.half"`` -> ``"float16"``; in torch mode its unsigned and quantized
    ints become signed ones). Returns ``(canonical name, lossy)``; ``lossy`` is
    True when the upstream type has no exact canonical counterpart (quantized
    types). Spellings go through :func:`acetest_ml.model.canonical_dtype`."""
    raw = str(name).strip()
    for prefix in ("tf.", "torch."):
        if raw.startswith(prefix):
            raw = raw[len(prefix):]
    if framework == "torch" and raw in _TORCH_EFFECTIVE:
        # uint8 stays uint8 in torch; upstream's replace of "uint" by "int" would
        # make it int8, which is what is really created.
        return _TORCH_EFFECTIVE[raw], raw in _LOSSY
    if framework == "torch" and raw == "uint8":
        return "int8", False
    canon = _QUANTIZED_AS.get(raw) or canonical_dtype(raw)
    if canon is None:
        raise ValueError(f"unknown upstream dtype {name!r}")
    return canon, raw in _LOSSY


# ---------------------------------------------------------------- API names

# Upstream PyTorch API names -> aten op names (prefix, prefix of the aten op).
_TORCH_PREFIXES = (
    ("torch.ops.aten.", ""),
    ("torch._C._nn.", ""),
    ("torch._C._fft.", ""),
    ("torch._C._linalg.", ""),
    ("torch._C._special.", ""),
    ("torch._C._VariableFunctions.", ""),
    ("torch.nn.functional.", ""),
    ("torch.Tensor.", ""),
    ("torch.linalg.", "linalg_"),
    ("torch.fft.", "fft_"),
    ("torch.special.", "special_"),
    ("torch.", ""),
)


def api_name(upstream_name: str, framework: str = "tf") -> str:
    """Our API name for an upstream one: ``tf.raw_ops.<Op>`` is kept; PyTorch
    names (``torch.x``, ``torch.nn.functional.x``, ``torch.linalg.x``,
    ``torch._C._nn.x``...) become ``torch.ops.aten.<op>``."""
    if framework == "tf" or upstream_name.startswith("tf."):
        return upstream_name
    for prefix, op_prefix in _TORCH_PREFIXES:
        if upstream_name.startswith(prefix):
            rest = upstream_name[len(prefix):]
            if prefix == "torch.ops.aten.":
                return upstream_name
            if op_prefix and rest.startswith(op_prefix):
                op_prefix = ""
            return "torch.ops.aten." + op_prefix + rest
    return upstream_name


# ---------------------------------------------------------------- values

class _Ctx:
    def __init__(self, framework: str):
        self.framework = framework
        self.lossy: set[str] = set()

    def dtype(self, name: str) -> str:
        canon, lossy = upstream_dtype(name, self.framework)
        if lossy:
            self.lossy.add(str(name))
        return canon


def _is_none(v: Any) -> bool:
    return v is None or (isinstance(v, str) and v == NONE_MARK)


def _int(v: Any) -> Any:
    if isinstance(v, bool):
        return int(v)
    try:
        return int(v)
    except (TypeError, ValueError):
        return v


def _float(v: Any) -> Any:
    try:
        return float(v)
    except (TypeError, ValueError, OverflowError):
        return v


def _conv_int(v, ctx):
    return _int(v.value)


def _conv_float(v, ctx):
    return _float(v.value)


def _conv_bool(v, ctx):
    return bool(v.value)


def _conv_str(v, ctx):
    val = v.value
    if isinstance(val, (bytes, bytearray)):
        return bytes(val).decode("latin-1")
    return str(val)


def _conv_type(v, ctx):
    return DTypeValue(ctx.dtype(v.value))


def _bound(x: Any) -> Optional[float]:
    if x is None:
        return None
    try:
        return float(x)
    except (TypeError, ValueError, OverflowError):
        return None


def _conv_tensor(v, ctx):
    shape = getattr(v, "shape", None)
    if shape is None:
        # Generated from a default value: upstream passes the value as it is.
        return _plain(v.value, ctx)
    explicit = getattr(v, "value", None)
    if explicit is not None and not _is_none(explicit):
        listed = isinstance(explicit, (list, tuple))
        items = list(explicit) if listed else [explicit]
        # Upstream passes a Python list (a number); the framework turns it
        # into a 1-D (0-d) tensor.
        shape = (len(items),) if listed else ()
        if all(isinstance(x, (int, bool)) for x in items):
            return TensorDesc("int32", shape, values=tuple(int(x) for x in items))
        if all(isinstance(x, (int, float)) for x in items):
            return TensorDesc("float32", shape, values=tuple(float(x) for x in items))
        return _plain(items, ctx)
    return TensorDesc(ctx.dtype(v.dtype), tuple(int(d) for d in shape),
                      low=_bound(getattr(v, "min_val", None)), high=_bound(getattr(v, "max_val", None)))


def _conv_list(v, ctx):
    return [_plain(x, ctx) for x in (v.value or [])]


# Upstream value class name -> converter. Unknown classes fall back to ``.value``.
VALUE_CONVERTERS: dict[str, Callable[[Any, _Ctx], Any]] = {
    "IntValue": _conv_int,
    "FloatValue": _conv_float,
    "BoolValue": _conv_bool,
    "StringValue": _conv_str,
    "TypeValue": _conv_type,
    "TensorValue": _conv_tensor,
    "ListValue": _conv_list,
}


def _plain(v: Any, ctx: _Ctx) -> Any:
    """Convert one upstream value (a value object or a raw Python value)."""
    if _is_none(v):
        return None
    conv = VALUE_CONVERTERS.get(type(v).__name__)
    if conv is not None:
        if _is_none(getattr(v, "value", 0)) and type(v).__name__ != "TensorValue":
            return None
        return conv(v, ctx)
    if isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, (bytes, bytearray)):
        return bytes(v).decode("latin-1")
    if isinstance(v, (list, tuple)):
        return [_plain(x, ctx) for x in v]
    if hasattr(v, "value"):
        return _plain(v.value, ctx)
    raise ValueError(f"cannot convert upstream value of type {type(v).__name__}")


def _coerce(value: Any, arg: Optional[ArgSpec]) -> Any:
    """Adapt a converted value to what ``spec`` says the argument is: upstream
    writes some tensor arguments as Python lists or scalars (it rewrites
    ``shape``-like tensors to lists), which the framework turns into tensors."""
    if arg is None or value is None:
        return value
    if arg.kind == TENSOR:
        if isinstance(value, bool):
            return TensorDesc("bool", (), values=(int(value),))
        if isinstance(value, int):
            return TensorDesc("int32", (), values=(value,))
        if isinstance(value, float):
            return TensorDesc("float32", (), values=(value,))
        if isinstance(value, list) and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                           for x in value):
            if all(isinstance(x, int) for x in value):
                return TensorDesc("int32", (len(value),), values=tuple(value))
            return TensorDesc("float32", (len(value),), values=tuple(float(x) for x in value))
    if arg.kind in (INT_LIST, FLOAT_LIST) and isinstance(value, TensorDesc) and value.values is not None:
        return list(value.values)
    return value


def _solved_parts(arg) -> list[str]:
    """Argument parts that upstream's constraints (a solver sample or the
    op_json) fixed before the random fill."""
    prop = getattr(arg, "arg_prop", None)
    if prop is None:
        return []
    out = []
    if getattr(prop, "ndim", None) is not None:
        out.append(f"{arg.name}.rank")
    if getattr(prop, "shape", None) is not None:
        out.append(f"{arg.name}.shape")
    if getattr(prop, "value", None) is not None or getattr(prop, "length", None) is not None:
        out.append(arg.name)
    return out


def to_abstract_input(upstream_api: str, arg_list: Iterable[Any], framework: str = "tf",
                      spec: Optional[ApiSpec] = None) -> AbstractInput:
    """The AbstractInput of one generated run.

    ``arg_list`` is upstream's ``APIManager.arg_list`` after
    ``generate_random_args()``. Arguments whose value is ``"&NONE"`` (passed as
    None) are left out. With ``spec``, values upstream passes as lists/scalars
    for tensor arguments become TensorDescs. Raises ValueError when a value
    cannot be converted (unknown dtype, ungenerated argument)."""
    ctx = _Ctx(framework)
    args: dict[str, Any] = {}
    solved: list[str] = []
    for arg in arg_list:
        value_obj = getattr(arg, "arg_value", None)
        if value_obj is None:
            raise ValueError(f"argument {arg.name!r} has no generated value")
        value = _plain(value_obj, ctx)
        if value is None:
            continue
        spec_arg = spec.arg(arg.name) if spec is not None and spec.has_arg(arg.name) else None
        args[arg.name] = _coerce(value, spec_arg)
        solved.extend(_solved_parts(arg))
    origin: dict[str, Any] = {"source": "acetest-upstream", "upstream_api": upstream_api}
    if ctx.lossy:
        origin["lossy_dtypes"] = sorted(ctx.lossy)
    return AbstractInput(api=api_name(upstream_api, framework), args=args, value_seed=0,
                         solved=solved, origin=origin)


# ---------------------------------------------------------------- spec

_LIST_KIND_OF_CHILD = {"int": INT_LIST, "float": FLOAT_LIST, "bool": BOOL_LIST, "string": STR_LIST,
                       "tensor": TENSOR_LIST, "type": DTYPE_LIST}
_SCALAR_KIND = {"INT": INT, "FLOAT": FLOAT, "BOOL": BOOL, "STRING": STR, "TYPE": DTYPE,
                "TENSOR": TENSOR}


def _child_type(prop) -> str:
    child = getattr(prop, "child_prop", None)
    if isinstance(child, list) and child:
        child = child[0]
    if isinstance(child, dict):
        t = child.get("type")
        if isinstance(t, str) and not t.startswith("&"):
            return t.lower()
    return "int"


def _dtype_list(names: Any, framework: str) -> Optional[list[str]]:
    if not isinstance(names, list):
        return None
    out: list[str] = []
    for n in names:
        try:
            c = upstream_dtype(n, framework)[0]
        except ValueError:
            continue
        if c not in out:
            out.append(c)
    return out or None


def _num(x: Any) -> Optional[float]:
    return x if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def spec_from_upstream(upstream_api: str, arg_list: Iterable[Any], framework: str = "tf") -> ApiSpec:
    """An ApiSpec describing upstream's argument list (kinds from upstream's
    argument types, dtype sets and references, rank bounds, enums). Used when
    our own spec sources do not know the API, and by online training, where it
    matches the converted inputs by construction."""
    specs: list[ArgSpec] = []
    for arg in arg_list:
        prop = arg.arg_prop
        tname = getattr(arg.type, "name", str(arg.type)).upper()
        if tname == "LIST":
            kind = _LIST_KIND_OF_CHILD.get(_child_type(prop), INT_LIST)
        elif tname in _SCALAR_KIND:
            kind = _SCALAR_KIND[tname]
        else:  # DICT and anything new: not describable, leave it out
            continue
        a = ArgSpec(name=arg.name, kind=kind, passed=not bool(getattr(prop, "is_mid", False)),
                    optional=bool(getattr(prop, "optional", False)))
        if kind == DTYPE:
            a.dtypes = _dtype_list(getattr(prop, "enum", None), framework)
        elif kind in (TENSOR, TENSOR_LIST):
            dt = getattr(prop, "dtype", None)
            if isinstance(dt, str) and dt.startswith("&"):
                a.dtype_ref = dt[1:].split(".")[0]
            elif isinstance(dt, list):
                a.dtypes = _dtype_list(dt, framework)
            elif isinstance(dt, str):
                a.dtypes = _dtype_list([dt], framework)
            for attr, field in (("min_ndim", "min_rank"), ("max_ndim", "max_rank")):
                v = _num(getattr(prop, attr, None))
                if v is not None:
                    setattr(a, field, int(v))
            nd = _num(getattr(prop, "ndim", None))
            if nd is not None:
                a.min_rank = a.max_rank = int(nd)
        elif kind in (INT, STR):
            enum = getattr(prop, "enum", None)
            if isinstance(enum, list) and enum:
                a.allowed = list(enum)
        if kind in (INT, FLOAT):
            a.minimum = _num(getattr(prop, "min", None))
            a.maximum = _num(getattr(prop, "max", None))
        specs.append(a)
    return ApiSpec(name=api_name(upstream_api, framework), framework=framework, args=specs,
                   source="acetest", notes={"from": "upstream argument list"})


# ---------------------------------------------------------------- write back

class _NoWriteBack(Exception):
    pass


def _spelling(canon: str, current: Any, framework: str) -> str:
    """Upstream's spelling of canonical dtype ``canon``: the current one when
    it already creates that dtype, else ``tf.<canon>`` (upstream spells
    dtypes the TensorFlow way in both modes)."""
    if isinstance(current, str):
        try:
            if upstream_dtype(current, framework)[0] == canon:
                return current
        except ValueError:
            pass
    spelled = f"tf.{canon}"
    try:
        if upstream_dtype(spelled, framework)[0] != canon:
            raise _NoWriteBack(f"no upstream spelling of {canon}")
    except ValueError:
        raise _NoWriteBack(f"no upstream spelling of {canon}") from None
    return spelled


def _edited(obj: Any, old: Any, new: Any, framework: str) -> Any:
    """A copy of upstream value object ``obj`` (converted: ``old``) that
    converts to ``new``; the object itself is left alone (the hook keeps
    references to drawn values). Raises _NoWriteBack for an edit upstream's
    values cannot hold."""
    import copy
    if old == new:
        return obj
    kind = type(obj).__name__
    if kind in ("IntValue", "FloatValue", "BoolValue", "StringValue", "TypeValue", "TensorValue",
                "ListValue"):
        out = copy.copy(obj)
    elif isinstance(obj, (bool, int, float, str)) and isinstance(new, (bool, int, float, str)):
        return new
    else:
        raise _NoWriteBack(f"value of type {kind}")
    if kind in ("IntValue", "FloatValue", "BoolValue", "StringValue"):
        if isinstance(new, TensorDesc):  # a tensor argument upstream passes as a number
            if new.values is None or len(new.values) != 1 or new.shape != ():
                raise _NoWriteBack("scalar from a tensor")
            new = new.values[0]
        if not isinstance(new, (bool, int, float, str)):
            raise _NoWriteBack(f"{kind} from {type(new).__name__}")
        out.value = {"IntValue": int, "FloatValue": float, "BoolValue": bool, "StringValue": str}[kind](new)
        return out
    if kind == "TypeValue":
        if not isinstance(new, DTypeValue):
            raise _NoWriteBack("dtype")
        out.value = _spelling(new.name, obj.value, framework)
        return out
    if kind == "ListValue":
        items = list(new.values) if isinstance(new, TensorDesc) and new.values is not None else new
        if not isinstance(items, list):
            raise _NoWriteBack("list")
        cur = list(obj.value or [])
        olds = list(old) if isinstance(old, list) else [None] * len(cur)
        made = []
        for i, v in enumerate(items):
            if i < len(cur):
                made.append(_edited(cur[i], olds[i] if i < len(olds) else None, v, framework))
            elif isinstance(v, (bool, int, float)) and (not cur or not hasattr(cur[-1], "value")):
                made.append(v)
            elif cur:
                made.append(_edited(cur[-1], olds[-1] if olds else None, v, framework))
            else:
                raise _NoWriteBack("list item")
        out.value = made
        if hasattr(out, "length"):
            out.length = len(made)
        return out
    # TensorValue
    if getattr(obj, "shape", None) is None:
        raise _NoWriteBack("tensor from a default value")
    explicit = getattr(obj, "value", None)
    if isinstance(new, list) and explicit is not None and not _is_none(explicit):
        out.value = list(new)
        return out
    if not isinstance(new, TensorDesc):
        raise _NoWriteBack("tensor")
    shape = [int(d) for d in new.shape]
    if (explicit is not None and not _is_none(explicit)) or (
            new.values is not None and (not isinstance(old, TensorDesc) or new.values != old.values)):
        # elements: upstream writes them as a Python list (a number for 0-d);
        # only small integer tensors, the kind rules name elements of
        if new.values is None or len(shape) > 1 or len(new.values) > 64 \
                or not new.dtype.startswith(("int", "uint")):
            raise _NoWriteBack("tensor elements")
        vals = [int(x) for x in new.values]
        out.value = vals[0] if shape == [] else vals
    canon = None
    try:
        canon = upstream_dtype(obj.dtype, framework)[0]
    except ValueError:
        pass
    if new.dtype != canon:
        out.dtype = _spelling(new.dtype, obj.dtype, framework)
    out.shape = shape
    if hasattr(obj, "ndim"):
        out.ndim = len(shape)
    if hasattr(obj, "num_elements"):
        n = 1
        for d in shape:
            n *= d
        out.num_elements = n
    for attr, bound in (("min_val", new.low), ("max_val", new.high)):
        if bound is not None and hasattr(obj, attr) and _bound(getattr(obj, attr)) != float(bound):
            setattr(out, attr, int(bound) if float(bound).is_integer() else float(bound))
    return out


def write_back(arg_list: Iterable[Any], old: AbstractInput, new: AbstractInput, framework: str = "tf") -> bool:
    """Set the values of upstream's ``arg_list`` so that they convert to
    ``new`` (an edit of ``old``, their conversion: a learned rule's repair).
    Changed arguments get edited copies of their value objects; nothing is
    changed and False is returned when an edit cannot be expressed in
    upstream's values (a float tensor's elements, an argument ``new`` adds
    or drops)."""
    args = list(arg_list)
    edits = []
    try:
        for arg in args:
            name = arg.name
            if name not in new.args and name not in old.args:
                continue
            if (name in new.args) != (name in old.args):
                raise _NoWriteBack(f"argument {name} added or dropped")
            if new.args[name] == old.args[name]:
                continue
            edits.append((arg, _edited(arg.arg_value, old.args[name], new.args[name], framework)))
    except (_NoWriteBack, TypeError, ValueError, AttributeError):
        return False
    for arg, value in edits:
        arg.arg_value = value
    return True
