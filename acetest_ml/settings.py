"""The settings of a campaign: one dataclass, defaults written once,
validated on construction.

``CampaignConfig`` is what the CLI, the benchmark and embedding code build;
each of them takes its defaults from here (``DEFAULTS``), and a nonsensical
value stops at construction with a :class:`SettingError` (a ``UserError``:
one line naming the setting, exit 2 from the CLI). ``validate()`` can be
called again after fields were changed in place.
"""
from __future__ import annotations

import math
import os
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, Optional

from .errors import UserError

#: the model registry shipped inside the package (package data)
DEFAULT_MODELS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "models.yaml")
#: where models go when the registry is the packaged one and no --models-dir is given
DEFAULT_MODELS_DIR = "models"

CONSTRAINT_SOURCES = ("registry", "acetest")
FRAMEWORKS = ("tf", "torch")
ML_FILTERS = ("offline", "online")
#: score: discard every candidate scoring below the threshold (the paper's
#: filter); rate: discard one only when running it would lower the API's valid
#: executions per second (see acetest_ml/filter.py RateGate)
FILTER_POLICIES = ("score", "rate")


class SettingError(UserError):
    """A setting has a value that cannot work; ``setting`` names it."""

    def __init__(self, setting: str, problem: str):
        super().__init__(f"{setting}: {problem}")
        self.setting = setting
        self.problem = problem


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _int_at_least(name: str, v: Any, low: int) -> None:
    if not _is_int(v) or v < low:
        raise SettingError(name, f"must be a whole number >= {low} (got {v!r})")


def _choice(name: str, v: Any, choices: tuple, optional: bool = False) -> None:
    if optional and v is None:
        return
    if v not in choices:
        allowed = ", ".join(choices) + (" or none" if optional else "")
        raise SettingError(name, f"must be one of {allowed} (got {v!r})")


def _writable_dir(name: str, path: Any) -> None:
    if not isinstance(path, str) or not path:
        raise SettingError(name, f"must be a folder path (got {path!r})")
    if os.path.exists(path) and not os.path.isdir(path):
        raise SettingError(name, f"{path} is a file, not a folder")
    parent = os.path.dirname(os.path.abspath(path))
    while parent and not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if parent and not os.path.isdir(parent):
        raise SettingError(name, f"{parent} is a file, so {path} cannot be created")


@dataclass
class CampaignConfig:
    """Everything one campaign needs. Field defaults are the documented
    defaults of the CLI and the benchmark."""

    apis: list[str]
    out: str
    budget: int = 200                       #: executed inputs per API
    seed: int = 0
    framework: Optional[str] = None         #: tf | torch | None (inferred from names)
    constraints: str = "registry"           #: registry | acetest
    acetest_data: str = os.path.join("third_party", "ACETest", "Tester", "data")
    #: ACETest constraints: our generation improvements beyond upstream's Tester
    #: (off: faithful to upstream; see acetest_ml/solve/acetest_problem.py)
    acetest_extensions: bool = False
    rules: Optional[str] = None             #: YAML rules file (registry constraints)
    timeout: float = 10.0                   #: seconds per run
    jobs: int = 2                           #: APIs run in parallel
    resume: bool = False
    ml_filter: Optional[str] = None         #: None | "offline" | "online"
    models: str = DEFAULT_MODELS            #: model registry YAML
    #: folder of model files (None: the registry's models_dir, ./models for the packaged one)
    models_dir: Optional[str] = None
    exploration: float = 0.05               #: share of executed runs spent on predicted-invalid
    filter_policy: str = "score"            #: score | rate (FILTER_POLICIES)
    batch: int = 16                         #: candidates scored per batch
    max_candidates_per_exec: int = 50       #: candidate cap = budget x this
    warmup: int = 60                        #: online: labelled runs before the first model
    retrain_every: int = 50                 #: online: new labels between retrainings
    mem_limit_mb: Optional[int] = None      #: worker memory limit (None: the executor's default)
    learn_rules: bool = False               #: learn rules from the runs, re-solve with them (learn/)
    #: with learn_rules: a rules YAML (e.g. ``rules learn`` output) whose rules
    #: for an API start as kept learned rules, either constraint source
    prior_rules: Optional[str] = None
    #: cheap candidates: most registry candidates are checked mutations of
    #: pooled Z3 models (solve/sampler.py); False: every candidate from Z3
    cheap: bool = True
    #: crash-aware filter: an input with P(crash or timeout) >= this is never discarded
    crash_threshold: float = 0.3
    #: a crash signature seen this many times is known: inputs predicted to
    #: reproduce it run only from the exploration share (0: off)
    known_crash_k: int = 3
    #: crash classes trained on fewer runs are cut at 3x their share; after
    #: this many candidates in a row not run, the next known crash runs (0: off)
    known_crash_floor: int = 16
    #: exploration draws predicted-invalid inputs scoring within this distance
    #: below the threshold (1.0: any score)
    explore_band: float = 0.25
    #: run predicted-invalid inputs instead of discarding them while the
    #: API's runs show the filter buys no pass rate (filter.Lift)
    lift_check: bool = True
    #: wall-clock seconds per API, counted once its worker is up (None: no
    #: limit; the budget still applies)
    time_budget: Optional[float] = None
    #: a warm spare worker per framework takes over after a crash or timeout
    #: (off: every restart is a cold framework start; kept to measure it)
    warm_spare: bool = True
    #: warm spare workers per framework (primed; one takes over per crash)
    spares: int = 2
    #: candidates drawn ahead in a background thread while runs execute
    #: (0: off; never with learn_rules, whose runs change the stream)
    prefetch: int = 16
    #: per-API constraint source overriding ``constraints`` (the benchmark
    #: mixes ACETest-data APIs and registry APIs in one campaign)
    constraints_by_api: dict = field(default_factory=dict)
    #: TensorFlow's oneDNN kernels in the worker: None = off for ACETest
    #: constraints (upstream's ``cpu_ori`` mode sets TF_ENABLE_ONEDNN_OPTS=0,
    #: and oneDNN's kernels reject other inputs), TensorFlow's default otherwise
    onednn: Optional[bool] = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise SettingError naming the first setting that cannot work."""
        if not isinstance(self.apis, list) or not self.apis:
            raise SettingError("apis", "name at least one API")
        for a in self.apis:
            if not isinstance(a, str) or not a.strip():
                raise SettingError("apis", f"API names must be non-empty strings (got {a!r})")
        _writable_dir("out", self.out)
        _int_at_least("budget", self.budget, 1)
        if not _is_int(self.seed):
            raise SettingError("seed", f"must be a whole number (got {self.seed!r})")
        _choice("framework", self.framework, FRAMEWORKS, optional=True)
        _choice("constraints", self.constraints, CONSTRAINT_SOURCES)
        if not isinstance(self.constraints_by_api, dict):
            raise SettingError("constraints_by_api", "must map API names to a constraint source")
        for api, src in self.constraints_by_api.items():
            _choice(f"constraints_by_api[{api}]", src, CONSTRAINT_SOURCES)
        if not isinstance(self.acetest_data, str) or not self.acetest_data:
            raise SettingError("acetest_data", f"must be a folder path (got {self.acetest_data!r})")
        if not isinstance(self.acetest_extensions, bool):
            raise SettingError("acetest_extensions",
                               f"must be true or false (got {self.acetest_extensions!r})")
        if self.rules is not None and (not isinstance(self.rules, str) or not self.rules):
            raise SettingError("rules", f"must be a file path (got {self.rules!r})")
        if self.prior_rules is not None and (not isinstance(self.prior_rules, str) or not self.prior_rules):
            raise SettingError("prior_rules", f"must be a file path (got {self.prior_rules!r})")
        if not _is_number(self.timeout) or not math.isfinite(self.timeout) or self.timeout <= 0:
            raise SettingError("timeout", f"must be a finite number of seconds > 0 (got {self.timeout!r})")
        _int_at_least("jobs", self.jobs, 1)
        if not isinstance(self.resume, bool):
            raise SettingError("resume", f"must be true or false (got {self.resume!r})")
        _choice("ml_filter", self.ml_filter, ML_FILTERS, optional=True)
        _choice("filter_policy", self.filter_policy, FILTER_POLICIES)
        if self.onednn is not None and not isinstance(self.onednn, bool):
            raise SettingError("onednn", f"must be true, false or unset (got {self.onednn!r})")
        if not isinstance(self.models, str) or not self.models:
            raise SettingError("models", f"must be a YAML file path (got {self.models!r})")
        if os.path.isdir(self.models):
            raise SettingError("models", f"{self.models} is a folder, not a YAML file")
        if self.models_dir is not None:
            _writable_dir("models_dir", self.models_dir)
        if (not _is_number(self.exploration) or not math.isfinite(self.exploration)
                or not 0.0 <= self.exploration <= 1.0):
            raise SettingError("exploration", f"must be a share between 0 and 1 (got {self.exploration!r})")
        _int_at_least("batch", self.batch, 1)
        _int_at_least("max_candidates_per_exec", self.max_candidates_per_exec, 1)
        _int_at_least("warmup", self.warmup, 1)
        _int_at_least("retrain_every", self.retrain_every, 1)
        if self.mem_limit_mb is not None:
            _int_at_least("mem_limit_mb", self.mem_limit_mb, 1)
        for flag in ("cheap", "lift_check"):
            if not isinstance(getattr(self, flag), bool):
                raise SettingError(flag, f"must be true or false (got {getattr(self, flag)!r})")
        if not isinstance(self.learn_rules, bool):
            raise SettingError("learn_rules", f"must be true or false (got {self.learn_rules!r})")
        for name in ("crash_threshold", "explore_band"):
            v = getattr(self, name)
            if not _is_number(v) or not math.isfinite(v) or not 0.0 <= v <= 1.0:
                raise SettingError(name, f"must be between 0 and 1 (got {v!r})")
        _int_at_least("known_crash_k", self.known_crash_k, 0)
        _int_at_least("known_crash_floor", self.known_crash_floor, 0)
        if self.time_budget is not None and (not _is_number(self.time_budget)
                                             or not math.isfinite(self.time_budget)
                                             or self.time_budget <= 0):
            raise SettingError("time_budget", f"must be a finite number of seconds > 0 "
                                              f"(got {self.time_budget!r})")
        _int_at_least("spares", self.spares, 1)
        _int_at_least("prefetch", self.prefetch, 0)
        if not isinstance(self.warm_spare, bool):
            raise SettingError("warm_spare", f"must be true or false (got {self.warm_spare!r})")

    @property
    def candidate_cap(self) -> int:
        """Candidates generated per API at most (executed or discarded)."""
        return max(self.budget * self.max_candidates_per_exec, self.budget + 100)

    def to_json(self) -> dict:
        return asdict(self)


def _defaults() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in fields(CampaignConfig):
        if f.default is not MISSING:
            out[f.name] = f.default
        elif f.default_factory is not MISSING:
            out[f.name] = f.default_factory()
    return out


#: the default of every setting that has one (the CLI's and the bench's defaults)
DEFAULTS: dict[str, Any] = _defaults()
