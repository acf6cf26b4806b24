"""Per-framework adapters, in a small registry keyed by framework name.

An adapter knows how to set a framework up for testing (imported once, one
thread), turn numpy arrays and dtype names into framework values, find the
callable behind an API name, and force evaluation of results. Importing this
module imports no framework: that happens in ``Adapter.setup()`` (the worker)
or inside the conversion functions.

The conversion functions (``tf_to_tensor``, ``tf_force``, ``torch_to_tensor``,
``torch_force``) are module-level and self-contained because reproducer scripts
embed their source, so the worker and a reproducer build tensors the same way.

Only whitelisted roots can be called: ``tf.raw_ops.<Op>`` and
``torch.ops.aten.<op>[.<overload>]``; a name is resolved by attribute lookup
from that root, never by evaluating it.
"""
from __future__ import annotations

import re
from typing import Any, Callable

import numpy as np

from ..errors import UnsupportedApiError, UserError
from ..model import ALL_DTYPES, DTypeValue, TensorDesc


class UnknownFrameworkError(UserError):
    pass


# --------------------------------------------------------------------------
# Self-contained conversion functions (also copied into reproducer scripts).
# --------------------------------------------------------------------------

def tf_to_tensor(arr, dtype):
    """numpy array (float32 for float16/bfloat16) -> tf.Tensor of ``dtype``."""
    import tensorflow as tf
    if dtype in ("float16", "bfloat16"):
        return tf.cast(tf.constant(arr, dtype=tf.float32), getattr(tf, dtype))
    return tf.constant(arr, dtype=getattr(tf, dtype))


def tf_force(result):
    """Materialise every output so that deferred errors surface now."""
    import tensorflow as tf
    stack = [result]
    while stack:
        x = stack.pop()
        if isinstance(x, tf.Tensor):
            if x.dtype not in (tf.resource, tf.variant):
                x.numpy()
        elif isinstance(x, (list, tuple)):
            stack.extend(x)
        elif isinstance(x, dict):
            stack.extend(x.values())


def torch_to_tensor(arr, dtype):
    """numpy array (float32 for float16/bfloat16) -> torch.Tensor of ``dtype``."""
    import torch
    if dtype == "string":
        raise TypeError("torch has no string tensors")
    # ascontiguousarray makes 0-d arrays 1-d: keep the shape
    t = torch.from_numpy(np.ascontiguousarray(arr).reshape(np.shape(arr)))
    if dtype in ("float16", "bfloat16"):
        t = t.to(getattr(torch, dtype))
    return t


def torch_force(result):
    """torch ops run eagerly: nothing to force."""
    return None


# --------------------------------------------------------------------------
# Adapters
# --------------------------------------------------------------------------

class Adapter:
    """Base class; subclasses fill in the framework specifics."""

    key: str = ""
    #: regular expression a target name must match (whitelisted root)
    target_pattern: re.Pattern = re.compile(r"(?!)")
    to_tensor: Callable[[np.ndarray, str], Any]
    force: Callable[[Any], None]

    def __init__(self) -> None:
        self.module: Any = None
        self.version: str | None = None

    # -- lifecycle ---------------------------------------------------------
    def setup(self) -> str:
        """Import the framework, limit it to one thread; returns its version.
        Runs no op: the zygote forks after it, which is only safe while the
        framework has started no runtime (thread pools, eager context)."""
        raise NotImplementedError

    def warm_up(self) -> None:
        """Run one tiny op so the runtime is initialised before the first
        request (in a forked worker, while it waits as the spare)."""
        raise NotImplementedError

    # -- names -------------------------------------------------------------
    @classmethod
    def check_target(cls, name: str) -> re.Match:
        m = cls.target_pattern.match(name)
        if m is None or any(part.startswith("__") for part in name.split(".")):
            raise UnsupportedApiError(
                f"{name}: not a callable name this tool may call for {cls.key} "
                f"(allowed: {cls.target_pattern.pattern})")
        return m

    def resolve(self, name: str) -> Callable:
        raise NotImplementedError

    # -- values ------------------------------------------------------------
    def dtype(self, name: str) -> Any:
        if name not in ALL_DTYPES:
            raise TypeError(f"unknown dtype {name!r}")
        return getattr(self._module(), name)

    def _module(self) -> Any:
        if self.module is None:
            self.setup()
        return self.module

    def convert(self, value: Any, seed: int, name: str) -> Any:
        """Abstract value -> framework value (tensors materialised with the
        input's value seed; list items named ``name[i]``)."""
        from ..materialize import make_array

        if isinstance(value, TensorDesc):
            return type(self).to_tensor(make_array(value, seed, name), value.dtype)
        if isinstance(value, DTypeValue):
            return self.dtype(value.name)
        if isinstance(value, list):
            return [self.convert(x, seed, f"{name}[{i}]") for i, x in enumerate(value)]
        return value

    # -- reproducer support -------------------------------------------------
    def script_imports(self) -> str:
        raise NotImplementedError

    def script_functions(self) -> tuple:
        return (type(self).to_tensor, type(self).force)

    def script_setup(self) -> str:
        raise NotImplementedError

    def dtype_source(self, name: str) -> str:
        raise NotImplementedError


#: frames TF prints under "*** Check failure stack trace: ***" (default 25):
#: symbolising each frame against the ~800 MB TF libraries costs ~15 ms in
#: the dying worker, so none are printed: the worker's own fatal-signal
#: handler writes the raw native stack, and the supervisor symbolises it when
#: a signature needs frames (``native_stack``)
TF_FATAL_TRACE_FRAMES = 0


def _limit_fatal_stack_trace(tf, frames: int) -> None:
    """Best effort: absl's SetMaxFramesInLogStackTrace in TF's framework
    library (found by its exported name, whatever absl's inline namespace)."""
    import ctypes
    import mmap
    import os
    path = os.path.join(os.path.dirname(tf.__file__), "libtensorflow_framework.so.2")
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            i = mm.find(b"12log_internal27SetMaxFramesInLogStackTraceEi\0")
            if i < 0:
                return
            name = mm[mm.rfind(b"\0", 0, i) + 1:mm.find(b"\0", i)].decode("ascii")
        if name.startswith("_ZN4absl"):
            getattr(ctypes.CDLL(path), name)(int(frames))
    except (OSError, AttributeError, UnicodeDecodeError, ValueError):
        pass


class TFAdapter(Adapter):
    key = "tf"
    target_pattern = re.compile(r"^tf\.raw_ops\.([A-Za-z][A-Za-z0-9_]*)$")
    to_tensor = staticmethod(tf_to_tensor)
    force = staticmethod(tf_force)

    def setup(self) -> str:
        import tensorflow as tf
        try:
            tf.config.threading.set_intra_op_parallelism_threads(1)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:  # context already initialised by someone else
            pass
        _limit_fatal_stack_trace(tf, TF_FATAL_TRACE_FRAMES)
        self.module = tf
        self.version = tf.__version__
        return self.version

    def warm_up(self) -> None:
        tf = self._module()
        tf.raw_ops.AddV2(x=tf.constant([1.0]), y=tf.constant([1.0])).numpy()

    def resolve(self, name: str) -> Callable:
        op = self.check_target(name).group(1)
        return getattr(self._module().raw_ops, op)

    def script_imports(self) -> str:
        return "import tensorflow as tf"

    def script_setup(self) -> str:
        return ("tf.config.threading.set_intra_op_parallelism_threads(1)\n"
                "tf.config.threading.set_inter_op_parallelism_threads(1)\n"
                "to_tensor = tf_to_tensor\n"
                "force = tf_force")

    def dtype_source(self, name: str) -> str:
        if name not in ALL_DTYPES:
            raise TypeError(f"unknown dtype {name!r}")
        return f"tf.{name}"


class TorchAdapter(Adapter):
    key = "torch"
    target_pattern = re.compile(
        r"^torch\.ops\.aten\.([A-Za-z_][A-Za-z0-9_]*)(?:\.([A-Za-z_][A-Za-z0-9_]*))?$")
    to_tensor = staticmethod(torch_to_tensor)
    force = staticmethod(torch_force)

    def setup(self) -> str:
        import torch
        torch.set_num_threads(1)
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:  # can only be set once, before parallel work
            pass
        self.module = torch
        self.version = torch.__version__
        return self.version

    def warm_up(self) -> None:
        torch = self._module()
        torch.ops.aten.add(torch.ones(2), torch.ones(2))

    def resolve(self, name: str) -> Callable:
        m = self.check_target(name)
        fn = getattr(self._module().ops.aten, m.group(1))
        if m.group(2):
            fn = getattr(fn, m.group(2))
        return fn

    def dtype(self, name: str) -> Any:
        if name == "string":
            raise TypeError("torch has no string dtype")
        return super().dtype(name)

    def script_imports(self) -> str:
        return "import torch"

    def script_setup(self) -> str:
        return ("torch.set_num_threads(1)\n"
                "torch.set_num_interop_threads(1)\n"
                "to_tensor = torch_to_tensor\n"
                "force = torch_force")

    def dtype_source(self, name: str) -> str:
        if name not in ALL_DTYPES or name == "string":
            raise TypeError(f"no torch dtype {name!r}")
        return f"torch.{name}"


ADAPTERS: dict[str, type[Adapter]] = {"tf": TFAdapter, "torch": TorchAdapter}


def adapter_class(framework: str) -> type[Adapter]:
    try:
        return ADAPTERS[framework]
    except KeyError:
        raise UnknownFrameworkError(
            f"unknown framework {framework!r} (known: {', '.join(sorted(ADAPTERS))})") from None


def get_adapter(framework: str) -> Adapter:
    """A fresh (not yet set up) adapter for ``framework``."""
    return adapter_class(framework)()


def check_target(framework: str, name: str) -> None:
    """Raise UnsupportedApiError unless ``name`` is under the framework's
    whitelisted root. Imports nothing."""
    adapter_class(framework).check_target(name)
