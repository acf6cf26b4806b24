"""Switch the hook on inside an upstream ACETest process: the one code path
shared by ``acetest-ml acetest`` (through :mod:`.bootstrap`) and by the
start-up loader in ``patches/`` (upstream's own ``python main.py``).

Settings come from a :class:`HookSettings`, built from our command's options
or from environment variables that mirror them:

=========================  =====================================  ==========
variable                   meaning                                default
=========================  =====================================  ==========
``ACETEST_ML_FILTER``      ``models`` / ``online`` (``none``:      unset = off
                           record only, with ``ACETEST_ML_COLLECT``)
``ACETEST_ML_MODELS``      model registry YAML                    unset
``ACETEST_ML_EXPLORATION`` share of rounds run on rejected inputs ``0.05``
``ACETEST_ML_MAX_TRIES``   candidates drawn per run               ``100``
``ACETEST_ML_WARMUP``      online: labelled runs before training  ``10``
``ACETEST_ML_SEED``        seeds upstream's ``random`` / NumPy    unset
``ACETEST_ML_COLLECT``     results-store folder for every run     unset
``ACETEST_ML_REALLOCATE``  ``1``: move rounds off rejected        ``1``
                           solver samples; ``0``: off
``ACETEST_ML_PROBES``      random fills scored per solver sample  ``8``
``ACETEST_ML_REPAIR``      ``1``: edit a candidate that breaks a  ``1``
                           learned rule to meet it; ``0``: draw
                           it again
``ACETEST_ML_KNOWN_CRASH_K`` crashes/timeouts like one seen this  ``3``
                           often are drawn again; ``0``: off
``ACETEST_ML_MIN_PER_CLASS`` online: valid and invalid runs       ``3``
                           needed before the first training
``ACETEST_ML_RETRAIN_EVERY`` online: retrain after this many      ``10``
                           more labelled runs (at least)
``ACETEST_ML_THRESHOLD``   online: a number, ``auto`` or          ``precision``
                           ``precision`` (see FilterConfig)
``ACETEST_ML_RULES``       ``1``: learn rules from upstream's     ``1``
                           messages and draw again what breaks
                           them; ``0``: off
``ACETEST_ML_EARLY_RULES`` ``1``: adopt a message's rule before   ``1``
                           any run passed (``0``: wait for one)
=========================  =====================================  ==========
"""
from __future__ import annotations

import math
import os
import random
import sys
from dataclasses import dataclass
from typing import Mapping, Optional, Union

from ..errors import ConfigError, UserError
from .hook import FilterConfig, FilterHook, install

ENV_PREFIX = "ACETEST_ML_"
#: set in the process the hook was installed in; children (spawned workers) skip
ACTIVE_MARK = "ACETEST_ML_HOOK_PID"
FILTER_CHOICES = ("none", "models", "online")


@dataclass
class HookSettings:
    filter: str = "none"
    models: Optional[str] = None
    exploration: float = 0.05
    max_tries: int = 100
    warmup: int = 10
    seed: Optional[int] = None
    collect: Optional[str] = None
    reallocate: bool = True
    repair: bool = True
    probes: int = 8
    known_crash_k: int = 3
    min_per_class: int = 3
    retrain_every: int = 10
    threshold: Union[float, str] = "precision"
    rules: bool = True
    early_rules: bool = True

    @property
    def wanted(self) -> bool:
        """Whether anything needs the hook (a filter, or recording runs)."""
        return self.filter != "none" or bool(self.collect)

    def filter_config(self) -> FilterConfig:
        if self.filter not in FILTER_CHOICES:
            raise ConfigError(f"unknown filter {self.filter!r} (use one of {', '.join(FILTER_CHOICES)})")
        return FilterConfig(mode=self.filter, models=self.models, exploration=self.exploration,
                            max_tries=self.max_tries, warmup=self.warmup,
                            seed=self.seed if self.seed is not None else 0,
                            collect=self.collect, reallocate=self.reallocate, probes=self.probes,
                            repair=self.repair,
                            known_crash_k=self.known_crash_k, min_per_class=self.min_per_class,
                            retrain_every=self.retrain_every, threshold=self.threshold,
                            rules=self.rules, early_rules=self.early_rules).validate()


def _number(environ: Mapping[str, str], name: str, cast, default):
    raw = environ.get(ENV_PREFIX + name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = cast(raw.strip())
    except ValueError:
        raise ConfigError(f"{ENV_PREFIX}{name}={raw!r} is not a {cast.__name__}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{ENV_PREFIX}{name}={raw!r} is not a finite number")
    return value


def _threshold(environ: Mapping[str, str], default: Union[float, str]) -> Union[float, str]:
    raw = (environ.get(ENV_PREFIX + "THRESHOLD") or "").strip()
    if not raw:
        return default
    if raw.lower() in ("auto", "precision"):
        return raw.lower()
    try:
        v = float(raw)
    except ValueError:
        raise ConfigError(f"{ENV_PREFIX}THRESHOLD={raw!r}: use a number in [0, 1], auto or precision") from None
    if not 0.0 <= v <= 1.0:
        raise ConfigError(f"{ENV_PREFIX}THRESHOLD={raw!r}: use a number in [0, 1], auto or precision")
    return v


def _flag(environ: Mapping[str, str], name: str, default: bool) -> bool:
    raw = environ.get(ENV_PREFIX + name)
    if raw is None or raw.strip() == "":
        return default
    v = raw.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{ENV_PREFIX}{name}={raw!r} is not a switch (use 1 or 0)")


def settings_from_env(environ: Mapping[str, str]) -> HookSettings:
    """HookSettings from ``ACETEST_ML_*`` variables; ConfigError names a bad one."""
    flt = (environ.get(ENV_PREFIX + "FILTER") or "").strip().lower()
    if flt in ("", "off"):
        flt = "none"
    if flt not in FILTER_CHOICES:
        raise ConfigError(f"{ENV_PREFIX}FILTER={environ.get(ENV_PREFIX + 'FILTER')!r}: use models or online")
    s = HookSettings(filter=flt,
                     models=(environ.get(ENV_PREFIX + "MODELS") or None),
                     exploration=_number(environ, "EXPLORATION", float, 0.05),
                     max_tries=_number(environ, "MAX_TRIES", int, 100),
                     warmup=_number(environ, "WARMUP", int, 10),
                     seed=_number(environ, "SEED", int, None),
                     collect=(environ.get(ENV_PREFIX + "COLLECT") or None),
                     reallocate=_flag(environ, "REALLOCATE", True),
                     repair=_flag(environ, "REPAIR", True),
                     probes=_number(environ, "PROBES", int, 8),
                     known_crash_k=_number(environ, "KNOWN_CRASH_K", int, 3),
                     min_per_class=_number(environ, "MIN_PER_CLASS", int, 3),
                     retrain_every=_number(environ, "RETRAIN_EVERY", int, 10),
                     threshold=_threshold(environ, "precision"),
                     rules=_flag(environ, "RULES", True),
                     early_rules=_flag(environ, "EARLY_RULES", True))
    if s.models:
        s.models = os.path.abspath(s.models)
    if s.collect:
        s.collect = os.path.abspath(s.collect)
    return s


def activate(settings: HookSettings, *, lazy: bool = False) -> Optional[FilterHook]:
    """Install the hook (when the settings want it), then seed upstream's global
    generators. ``lazy``: do not check that upstream's modules are importable
    yet (at interpreter start-up the script's folder is not on ``sys.path``).
    Raises UserError for bad settings before anything is patched."""
    hook = None
    if settings.wanted:
        config = settings.filter_config()
        if config.collect:
            from .collect import check_collect_dir
            check_collect_dir(config.collect)
        hook = install(config, lazy=lazy)
    # Seed last, so that nothing imported or loaded above (the hook keeps its
    # own work off these generators) shifts upstream's random stream.
    if settings.seed is not None:
        import numpy as np
        random.seed(settings.seed)
        np.random.seed(settings.seed % (2 ** 32))
    return hook


def activate_from_env(environ: Optional[Mapping[str, str]] = None) -> Optional[FilterHook]:
    """Entry point of the ``patches/`` loader: read ``ACETEST_ML_*``, install
    the hook. Nothing happens without ``ACETEST_ML_FILTER`` / ``_COLLECT``, or
    in a child of the process that installed it. A bad value prints one line
    on stderr and leaves upstream unpatched (it then runs unfiltered)."""
    environ = os.environ if environ is None else environ
    if not (environ.get(ENV_PREFIX + "FILTER") or environ.get(ENV_PREFIX + "COLLECT")):
        return None
    if environ.get(ACTIVE_MARK) and environ.get(ACTIVE_MARK) != str(os.getpid()):
        return None
    try:
        hook = activate(settings_from_env(environ), lazy=True)
        os.environ[ACTIVE_MARK] = str(os.getpid())
        return hook
    except UserError as e:
        print(f"acetest-ml: filter not installed, upstream runs unfiltered: {e}", file=sys.stderr, flush=True)
        return None
