"""acetest-ml: ACETest-style operator testing with a learned validity filter.

The public API is what ``__all__`` lists; everything else (modules and names
starting with an underscore, and the submodules not re-exported here) is
internal and may change. Names are imported on first use, so ``import
acetest_ml`` stays cheap (no framework, solver or learner is loaded)::

    from acetest_ml import CampaignConfig, run_campaign
    summary = run_campaign(CampaignConfig(apis=["tf.raw_ops.Conv2D"], out="runs/c", budget=50))
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name -> (module, attribute)
_EXPORTS: dict[str, tuple[str, str]] = {
    # campaign settings and runner
    "CampaignConfig": ("acetest_ml.settings", "CampaignConfig"),
    "DEFAULTS": ("acetest_ml.settings", "DEFAULTS"),
    "run_campaign": ("acetest_ml.campaign", "run_campaign"),
    # outcomes
    "Outcome": ("acetest_ml.outcome", "Outcome"),
    "Stage": ("acetest_ml.outcome", "Stage"),
    "Decision": ("acetest_ml.outcome", "Decision"),
    "ApiStatus": ("acetest_ml.outcome", "ApiStatus"),
    # data model and spec loading
    "AbstractInput": ("acetest_ml.model", "AbstractInput"),
    "ApiSpec": ("acetest_ml.model", "ApiSpec"),
    "ArgSpec": ("acetest_ml.model", "ArgSpec"),
    "TensorDesc": ("acetest_ml.model", "TensorDesc"),
    "DTypeValue": ("acetest_ml.model", "DTypeValue"),
    "canonical_dtype": ("acetest_ml.model", "canonical_dtype"),
    "get_spec": ("acetest_ml.spec", "get_spec"),
    "load_specs": ("acetest_ml.spec", "load_specs"),
    # validity models
    "ValidityModel": ("acetest_ml.classify", "ValidityModel"),
    "ModelRegistry": ("acetest_ml.classify", "ModelRegistry"),
    "train_model": ("acetest_ml.classify", "train_model"),
    # running one input
    "Executor": ("acetest_ml.execute.supervisor", "Executor"),
    "RunResult": ("acetest_ml.execute.supervisor", "RunResult"),
    # errors
    "UserError": ("acetest_ml.errors", "UserError"),
    "SettingError": ("acetest_ml.settings", "SettingError"),
}

__all__ = ["__version__"] + list(_EXPORTS)

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from .campaign import run_campaign
    from .classify import ModelRegistry, ValidityModel, train_model
    from .errors import UserError
    from .execute.supervisor import Executor, RunResult
    from .model import AbstractInput, ApiSpec, ArgSpec, DTypeValue, TensorDesc, canonical_dtype
    from .outcome import ApiStatus, Decision, Outcome, Stage
    from .settings import DEFAULTS, CampaignConfig, SettingError
    from .spec import get_spec, load_specs


def __getattr__(name: str) -> Any:
    try:
        module, attr = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'acetest_ml' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
