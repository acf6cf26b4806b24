"""AbstractInput -> concrete arrays, call plans and reproducer scripts.

Pure numpy; no framework is imported here (the adapters in
``acetest_ml.execute.frameworks`` turn arrays into framework tensors).

Element values
--------------
Every tensor argument gets its own 64-bit seed, a stable hash (SHA-256) of
``(ai.value_seed, argument name)``; list items are named ``name[i]``. Values are
drawn from a counter-based generator (splitmix64 over the element index) written
with plain numpy integer arithmetic, so they do not depend on numpy's
``Generator`` streams and are identical across numpy versions. The reproducer
scripts embed the very same functions (their source is copied in at write time).

Default ranges when a TensorDesc has no ``low``/``high``:

- floats: uniform in [-10, 10]; complex: real and imaginary parts each in [-10, 10]
- signed and unsigned ints: [0, 8] inclusive. Integer tensors are very often
  indices, axes, sizes or counts, which must be non-negative and small, so this
  range lets many more calls through than a symmetric one; a constraint that
  wants negative values sets ``low``/``high`` (or ``values``) explicitly.
  Ranges are clamped to the dtype's limits (unsigned >= 0).
- bool: False/True with equal probability
- string: ASCII lowercase words of 1..8 characters (numpy object array of bytes)

float16 and bfloat16 tensors are generated as float32 arrays (numpy has no
bfloat16); the framework adapter casts them.
"""
from __future__ import annotations

import inspect
import keyword
import math
import re
from typing import Any

import numpy as np

from .errors import UserError, UnsupportedApiError
from .model import (ALL_DTYPES, AbstractInput, ApiSpec, DTypeValue, TensorDesc)

DEFAULT_MAX_ELEMENTS = 2 ** 22
DEFAULT_MAX_BYTES = 256 * 2 ** 20

#: bytes per element of each canonical dtype, for the byte cap (strings are
#: counted as 16 bytes each: a short generated word plus its header).
ITEMSIZE = {
    "float16": 2, "bfloat16": 2, "float32": 4, "float64": 8,
    "int8": 1, "int16": 2, "int32": 4, "int64": 8,
    "uint8": 1, "uint16": 2, "uint32": 4, "uint64": 8,
    "complex64": 8, "complex128": 16, "bool": 1, "string": 16,
}


class CapExceeded(Exception):
    """An input is too large to materialise; the caller records it as skipped.
    Deliberately not a UserError: it is an outcome, not a mistake."""


class InvalidInputError(UserError):
    """An AbstractInput does not fit its ApiSpec (unknown argument, bad tensor
    description...)."""


# --------------------------------------------------------------------------
# Element generation. The functions between the markers below are copied
# verbatim into reproducer scripts: they may only use numpy (as ``np``),
# the standard library (imported inside), and each other.
# --------------------------------------------------------------------------

def arg_seed(value_seed, name):
    """Per-argument 64-bit seed: stable hash of (value seed, argument name)."""
    import hashlib
    digest = hashlib.sha256(("%d/%s" % (int(value_seed), name)).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little")


def uint64_stream(seed, n, offset=0):
    """``n`` pseudo-random uint64 values: splitmix64 applied to a counter."""
    golden = np.uint64(0x9E3779B97F4A7C15)
    with np.errstate(over="ignore"):
        idx = np.arange(offset + 1, offset + n + 1, dtype=np.uint64)
        z = idx * golden + np.uint64(seed & 0xFFFFFFFFFFFFFFFF)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return z


def generate_array(dtype, shape, low, high, values, seed):
    """Deterministic array for one tensor. Default ranges: floats and complex
    parts uniform in [-10, 10], integers in [0, 8] inclusive (clamped to the
    dtype), bools 50/50, strings lowercase words of 1..8 letters.
    float16/bfloat16 come back as float32, strings as bytes objects."""
    import math
    shape = tuple(int(d) for d in shape)
    n = 1
    for d in shape:
        n *= d
    np_name = {"float16": "float32", "bfloat16": "float32", "bool": "bool_",
               "string": "object_"}.get(dtype, dtype)
    np_dtype = getattr(np, np_name)
    if values is not None:
        vals = list(values)
        if len(vals) != n:
            raise ValueError("tensor of shape %r needs %d values, got %d" % (shape, n, len(vals)))
        if dtype == "string":
            vals = [v.encode("utf-8") if isinstance(v, str) else bytes(v) for v in vals]
            arr = np.empty(n, dtype=object)
            arr[:] = vals
            return arr.reshape(shape)
        if dtype.startswith("complex"):
            vals = [complex(v[0], v[1]) if isinstance(v, (list, tuple)) else complex(v) for v in vals]
        return np.array(vals, dtype=np_dtype).reshape(shape)
    if dtype in ("float16", "bfloat16", "float32", "float64"):
        lo = -10.0 if low is None else float(low)
        hi = 10.0 if high is None else float(high)
        u = (uint64_stream(seed, n) >> np.uint64(11)).astype(np.float64) * (2.0 ** -53)
        return (lo + u * (hi - lo)).astype(np_dtype).reshape(shape)
    if dtype in ("complex64", "complex128"):
        lo = -10.0 if low is None else float(low)
        hi = 10.0 if high is None else float(high)
        u = (uint64_stream(seed, 2 * n) >> np.uint64(11)).astype(np.float64) * (2.0 ** -53)
        parts = lo + u * (hi - lo)
        return (parts[:n] + 1j * parts[n:]).astype(np_dtype).reshape(shape)
    if dtype == "bool":
        lo = 0 if low is None else max(0, min(1, int(math.ceil(low))))
        hi = 1 if high is None else max(0, min(1, int(math.floor(high))))
        if lo > hi:
            lo, hi = hi, lo
        bits = uint64_stream(seed, n) >> np.uint64(63)
        if lo == hi:
            return np.full(shape, bool(lo))
        return bits.astype(np.bool_).reshape(shape)
    if dtype == "string":
        z = uint64_stream(seed, 9 * n)
        lengths = (z[:n] % np.uint64(8)).astype(np.int64) + 1
        letters = (z[n:] % np.uint64(26)).astype(np.uint8) + ord("a")
        arr = np.empty(n, dtype=object)
        for i in range(n):
            arr[i] = letters[8 * i:8 * i + lengths[i]].tobytes()
        return arr.reshape(shape)
    # integers
    info = np.iinfo(np_dtype)
    lo = 0 if low is None else int(math.ceil(low))
    hi = 8 if high is None else int(math.floor(high))
    lo = min(max(lo, int(info.min)), int(info.max))
    hi = min(max(hi, int(info.min)), int(info.max))
    if lo > hi:
        lo, hi = hi, lo
    span = hi - lo + 1
    z = uint64_stream(seed, n)
    with np.errstate(over="ignore"):
        r = z if span >= 2 ** 64 else z % np.uint64(span)
        r = r + np.uint64(lo % 2 ** 64)  # wraps mod 2**64 to the right value
    if info.min < 0:
        return r.view(np.int64).astype(np_dtype).reshape(shape)
    return r.astype(np_dtype).reshape(shape)

# ---- end of the functions copied into reproducers ----


_GENERATOR_FUNCTIONS = (arg_seed, uint64_stream, generate_array)


def make_array(desc: TensorDesc, seed: int, name: str) -> np.ndarray:
    """Concrete array for tensor ``desc`` of argument ``name`` (list items:
    ``name[i]``) under the input's value seed ``seed``. float16/bfloat16 come
    back as float32; strings as an object array of bytes."""
    if desc.dtype not in ALL_DTYPES:
        raise InvalidInputError(f"argument {name}: unknown dtype {desc.dtype!r}")
    if any(int(d) < 0 for d in desc.shape):
        raise InvalidInputError(f"argument {name}: negative dimension in shape {list(desc.shape)}")
    try:
        return generate_array(desc.dtype, desc.shape, desc.low, desc.high, desc.values,
                              arg_seed(seed, name))
    except (TypeError, ValueError) as e:
        raise InvalidInputError(f"argument {name}: {e}") from None


# --------------------------------------------------------------------------
# Caps
# --------------------------------------------------------------------------

def check_caps(ai: AbstractInput, max_elements: int = DEFAULT_MAX_ELEMENTS,
               max_bytes: int = DEFAULT_MAX_BYTES) -> None:
    """Raise CapExceeded when one tensor has more than ``max_elements``
    elements or all tensors together take more than ``max_bytes``. Pure
    arithmetic on shapes: nothing is allocated."""
    total = 0
    for name, t in ai.tensors().items():
        if any(int(d) < 0 for d in t.shape):
            raise InvalidInputError(f"argument {name}: negative dimension in shape {list(t.shape)}")
        n = t.numel
        if n > max_elements:
            raise CapExceeded(f"{name}: {n} elements (shape {list(t.shape)}) > cap {max_elements}")
        total += n * ITEMSIZE.get(t.dtype, 8)
    if total > max_bytes:
        raise CapExceeded(f"tensors take {total} bytes together > cap {max_bytes}")


# --------------------------------------------------------------------------
# Call plans
# --------------------------------------------------------------------------

def _plan_tf(spec: ApiSpec, ai: AbstractInput) -> tuple[list, list, list]:
    return [], [a.name for a in spec.args if a.passed and a.name in ai.args], []


def _plan_torch(spec: ApiSpec, ai: AbstractInput) -> tuple[list, list, list]:
    positional: list[str] = []
    keyword_args: list[str] = []
    # optional arguments the schema gives no default must be passed as None
    none_args = [a.name for a in spec.args if a.passed and a.optional and not a.has_default
                 and a.name not in ai.args]
    none_args += [n for n in spec.notes.get("pass_none", []) if not spec.has_arg(n)]
    gap = False
    for a in spec.args:
        if not a.passed or a.keyword_only:
            continue
        if a.name not in ai.args:
            gap = True
        elif gap:
            keyword_args.append(a.name)
        else:
            positional.append(a.name)
    keyword_args += [a.name for a in spec.args if a.passed and a.keyword_only and a.name in ai.args]
    return positional, keyword_args, none_args


_PLANNERS = {"tf": _plan_tf, "torch": _plan_torch}


def plan_call(spec: ApiSpec, ai: AbstractInput) -> dict:
    """How to call ``spec`` with ``ai``: a JSON-able dict
    ``{"framework", "target", "positional": [names], "keyword": [names]}``.

    TF passes every passed argument by keyword. torch passes the
    non-keyword-only arguments positionally, in spec order, up to the first one
    missing from ``ai.args``; later ones and keyword-only ones go by keyword.
    Arguments absent from ``ai.args`` or with ``passed=False`` are omitted."""
    from .execute.frameworks import check_target  # pure, no framework import

    planner = _PLANNERS.get(spec.framework)
    if planner is None:
        raise UnsupportedApiError(f"{spec.name}: unknown framework {spec.framework!r}")
    check_target(spec.framework, spec.name)
    if ai.api != spec.name:
        raise InvalidInputError(f"input is for {ai.api}, not {spec.name}")
    unknown = [k for k in ai.args if not spec.has_arg(k)]
    if unknown:
        raise InvalidInputError(f"{spec.name} has no argument(s) {', '.join(map(repr, unknown))}")
    positional, keyword_args, none_args = planner(spec, ai)
    return {"framework": spec.framework, "target": spec.name,
            "positional": positional, "keyword": keyword_args, "none": none_args}


# --------------------------------------------------------------------------
# Reproducer scripts
# --------------------------------------------------------------------------

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _literal(v: Any) -> str:
    """Python source for a plain JSON-like value."""
    if isinstance(v, bool) or v is None:
        return repr(v)
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            return f"float({repr(v)!r})"
        return repr(v)
    if isinstance(v, (int, str, bytes)):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_literal(x) for x in v) + "]"
    raise InvalidInputError(f"cannot write value {v!r} into a script")


def _value_source(v: Any, name: str, adapter) -> str:
    if isinstance(v, TensorDesc):
        values = None if v.values is None else list(v.values)
        return (f"to_tensor(generate_array({v.dtype!r}, {list(v.shape)!r}, {_literal(v.low)}, "
                f"{_literal(v.high)}, {_literal(values)}, arg_seed(VALUE_SEED, {name!r})), {v.dtype!r})")
    if isinstance(v, DTypeValue):
        return adapter.dtype_source(v.name)
    if isinstance(v, list) and any(isinstance(x, (TensorDesc, DTypeValue)) for x in v):
        return "[" + ", ".join(_value_source(x, f"{name}[{i}]", adapter) for i, x in enumerate(v)) + "]"
    return _literal(v)


def reproducer_script(spec: ApiSpec, ai: AbstractInput) -> str:
    """A standalone script (numpy + the framework only) that rebuilds the
    exact call of ``ai`` (same element values) and prints one line
    ``OUTCOME: pass`` or ``OUTCOME: invalid <exc type>: <message>``; a crash
    kills it like it killed the worker."""
    from .execute.frameworks import get_adapter

    plan = plan_call(spec, ai)
    adapter = get_adapter(spec.framework)
    lines = [
        "#!/usr/bin/env python3",
        f"# Reproducer for {spec.name} written by acetest-ml.",
        f"# Abstract input: {ai.dumps()}",
        "# Needs only numpy and the framework. Run: python <this file>",
        "import os",
        "for _k in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'TF_NUM_INTRAOP_THREADS', 'TF_NUM_INTEROP_THREADS'):",
        "    os.environ.setdefault(_k, '1')",
        "import numpy as np",
        adapter.script_imports(),
        "",
        f"VALUE_SEED = {int(ai.value_seed)}",
        "",
    ]
    for fn in _GENERATOR_FUNCTIONS + adapter.script_functions():
        lines.append(inspect.getsource(fn).rstrip())
        lines.append("")
        lines.append("")
    lines.append(adapter.script_setup())
    lines.append("")
    var = {}
    for name in plan["positional"] + plan["keyword"]:
        if not _IDENT.match(name):
            raise InvalidInputError(f"argument name {name!r} is not an identifier")
        var[name] = f"arg_{name}"
        lines.append(f"{var[name]} = {_value_source(ai.args[name], name, adapter)}")
    call_args = [var[n] for n in plan["positional"]]
    kw_plain = [n for n in plan["keyword"] if not keyword.iskeyword(n)]
    kw_reserved = [n for n in plan["keyword"] if keyword.iskeyword(n)]
    call_args += [f"{n}={var[n]}" for n in kw_plain]
    call_args += [f"{n}=None" for n in plan.get("none", []) if _IDENT.match(n) and not keyword.iskeyword(n)]
    if kw_reserved:
        call_args.append("**{" + ", ".join(f"{n!r}: {var[n]}" for n in kw_reserved) + "}")
    target = ""
    for part in spec.name.split("."):
        if not target:
            target = part
        elif keyword.iskeyword(part):
            target = f"getattr({target}, {part!r})"
        else:
            target = f"{target}.{part}"
    lines += [
        "",
        f"op = {target}",
        "try:",
        f"    result = op({', '.join(call_args)})",
        "    force(result)",
        "except Exception as e:",
        "    message = str(e)[:2000]",
        "    print('OUTCOME: invalid %s.%s: %s' % (type(e).__module__, type(e).__qualname__, message))",
        "else:",
        "    print('OUTCOME: pass')",
        "",
    ]
    return "\n".join(lines)

