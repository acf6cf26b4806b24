"""ApiSpec sources. ``get_spec`` resolves a user-facing API name to its spec
from the framework registry it names (``tf.raw_ops.*`` or ``torch.ops.aten.*``)."""
from __future__ import annotations

from ..errors import UnknownApiError
from ..model import ApiSpec
from ..quiet import import_framework

#: the module each framework's specs are read from (imported quietly first);
#: TF specs come from a cache when they can and import TensorFlow themselves
#: (quietly) when they cannot
_FRAMEWORK_MODULES = {"torch": "torch"}


def framework_of(name: str) -> str:
    if name.startswith("tf.raw_ops.") or name.startswith("tf."):
        return "tf"
    if name.startswith("torch.") or name.startswith("aten::"):
        return "torch"
    raise UnknownApiError(f"unknown API {name!r}: names look like tf.raw_ops.<Op> or torch.ops.aten.<op>")


def get_spec(name: str, framework: str | None = None) -> ApiSpec:
    fw = framework or framework_of(name)
    if fw in _FRAMEWORK_MODULES:
        import_framework(_FRAMEWORK_MODULES[fw])
    if fw == "tf":
        from .tensorflow import get_tf_spec
        return get_tf_spec(name)
    if fw == "torch":
        from .torch import get_torch_spec
        return get_torch_spec(name)
    raise UnknownApiError(f"unknown framework {fw!r} (use tf or torch)")


def load_specs(framework: str) -> dict[str, ApiSpec]:
    if framework in _FRAMEWORK_MODULES:
        import_framework(_FRAMEWORK_MODULES[framework])
    if framework == "tf":
        from .tensorflow import load_tf_specs
        return load_tf_specs()
    if framework == "torch":
        from .torch import load_torch_specs
        return load_torch_specs()
    raise UnknownApiError(f"unknown framework {framework!r} (use tf or torch)")
