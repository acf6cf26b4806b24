"""Install the validity filter into the original ACETest Tester at run time.

Seams in upstream's code (the original Tester and the ncsu-swat fork alike):

- ``APIManager.APIManager.generate_random_args(self)`` draws the values of one
  run into ``self.arg_list``; ``Runner.Runner.run(self, manager, times)`` calls
  it once per run and then executes and labels that run. We wrap it: generate,
  convert (``convert.to_abstract_input``), score, and generate again while the
  scorer predicts the input invalid (at most ``max_tries`` candidates; then the
  best-scoring one runs). A share ``exploration`` of predicted-invalid
  candidates runs anyway.
- Upstream labels a run by bumping the runner's counters (``invalid``,
  ``crash``, ``timeout``, ``OOM``); a run that bumps none passed. We wrap
  ``Runner.run`` and ``Runner.terminate`` and read the counters after each run,
  which gives every executed input its outcome: for the statistics, and in
  online mode as training data.

The hook must not change what upstream does before it filters, or a
``--compare`` is not like for like (measured on MaxPool3D: other constraint
samples, another baseline pass rate). So it leaves upstream's global random
generators as it found them (``keep_global_rng``), patches upstream's modules
when upstream imports them rather than importing them first, and loads the
classifier libraries only once sampling is over (their threads change
upstream's forked sampling).

Statistics are written as JSON beside upstream's per-API outputs
(``<output_path>/<api>/acetest_ml_filter.json``), every time a runner finishes
a sample, so they survive upstream's worker processes (the ncsu-swat fork's
``--api_workers``) and an interrupted campaign.
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import math
import os
import random
import re
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence, Union

from ..errors import ConfigError, UserError
from ..filter import int_outside
from ..model import AbstractInput, ApiSpec, TensorDesc
from ..learner import OnlineLearner
from ..outcome import EXECUTED, Outcome
from . import convert
from .messages import InvalidLog

STATS_FILE = "acetest_ml_filter.json"
MODES = ("none", "models", "online")
#: upstream's runner also reports out-of-memory and runs it could not label
OOM, UNSUPPORTED, UNKNOWN = "oom", "unsupported", "unknown"
OUTCOMES = tuple(o.value for o in EXECUTED) + (OOM, UNSUPPORTED, UNKNOWN)
DECISIONS = ("accepted", "crash_kept", "explored", "forced", "unfiltered", "unconvertible")
#: per-sample round reallocation counters (see ``_Reallocator``)
SAMPLE_COUNTS = ("samples_scored", "samples_rejected", "samples_abandoned", "rounds_moved", "rounds_spent_at_end")
#: where the hook's own time goes (``ApiFilter.phase_time``)
PHASES = ("generate", "convert", "score", "train", "probe", "rules", "repair")
_COUNTERS = ("invalid", "crash", "timeout", "OOM")
#: repaired runs (and half as many runs meeting the rules as drawn) before
#: repair may stop, and how much lower their valid share must be for it
REPAIR_PROBATION = 10
REPAIR_MARGIN = 0.25
#: refusals of a dtype spelling the features cannot see before it is drawn again
LOSSY_K = 2
_INT32_ATTR = re.compile(r"Attr (\w+) has value -?\d+ out of range for an int32")
#: outcomes the rule learner observes
_RULE_OUTCOMES = (Outcome.PASS.value, Outcome.INVALID.value, Outcome.CRASH.value)
# Upstream's modules and the classes the hook patches in them.
_MANAGER_MODULE, _RUNNER_MODULE = "APIManager", "Runner"
_UPSTREAM_CLASSES = {_MANAGER_MODULE: "APIManager", _RUNNER_MODULE: "Runner"}


class UpstreamError(UserError):
    """The upstream checkout cannot be used (missing, not importable, failed)."""


@dataclass
class FilterConfig:
    """How the hook filters. ``mode``: ``"models"`` (scorers from the model
    registry YAML ``models``), ``"online"`` (train per API from upstream's
    own outcomes after ``warmup`` labelled runs with both classes present,
    retrain each time the labelled data grew by ``retrain_factor``) or
    ``"none"`` (no filter: only statistics and, with ``collect``, recording).
    ``collect``: results-store folder that receives every executed run.
    ``reallocate``: score each solver sample over ``probes`` random fills and
    move the rounds of a sample predicted invalid for all of them to the
    others (``exploration`` of its rounds still run), keeping the total;
    a sample's rounds run ``chunk`` at a time (0: at once) and the rest move
    the same way once a chunk had ``give_up_forced`` forced runs.
    As in our campaigns: exploration runs stay within ``exploration`` of the
    rounds, drawn from scores within ``explore_band`` below the threshold; an
    input with P(crash or timeout) >= ``crash_threshold`` (lower for a thin
    crash class, see ``known_crash_floor``) is never discarded unless it is
    predicted (nearest recorded crash input) to reproduce a crash or timeout
    seen ``known_crash_k`` times (0 = off): upstream waits ``round_timeout``
    seconds on every timeout and restarts its worker after it.
    Online training: the first model is trained once ``warmup`` runs are
    labelled and each side (valid / invalid) has ``min_per_class`` runs, then
    again once the labelled runs reach ``max(n + retrain_every, n *
    retrain_factor)`` (geometric: training stays a small share of the hook's
    time on long campaigns); ``threshold`` is a number or a
    policy picked on out-of-fold scores (``"auto"``: balanced accuracy,
    ``"precision"``: the valid class's precision at half its recall).
    ``rules``: learn rules from upstream's error messages and from the runs
    (the campaign's rule learner) and draw again a candidate that breaks an
    active rule, unless ``repair`` can edit its values to meet the rules
    (learn.repair; the edited input runs); ``early_rules``: adopt a message's rule before any run
    passed (upstream's AvgPoolGrad passes 12% of its runs: waiting for a
    pass leaves its first tens of runs to the op's known refusals). Also
    drawn again, in every filtering mode: a candidate with a dtype spelling
    the features cannot see (quantized) that was refused ``LOSSY_K`` times and
    never passed, and one with a value beyond int32 in an attribute the op
    refused for that ("out of range for an int32")."""

    mode: str = "models"
    models: Optional[str] = None
    exploration: float = 0.05
    max_tries: int = 100
    seed: int = 0
    warmup: int = 10
    retrain_factor: float = 2.0
    retrain_every: int = 10
    min_per_class: int = 3
    kind: str = "lightgbm"
    params: dict = field(default_factory=dict)
    threshold: Union[float, str] = "precision"
    rules: bool = True
    early_rules: bool = True
    chunk: int = 10
    give_up_forced: int = 2
    collect: Optional[str] = None
    repair: bool = True
    reallocate: bool = True
    probes: int = 8
    explore_band: float = 0.25
    crash_threshold: float = 0.3
    known_crash_k: int = 3
    known_crash_floor: int = 16

    def validate(self, check_models: bool = True) -> "FilterConfig":
        if self.mode not in MODES:
            raise ConfigError(f"unknown filter mode {self.mode!r} (use one of {', '.join(MODES)})")
        if not (0.0 <= float(self.exploration) <= 1.0) or math.isnan(float(self.exploration)):
            raise ConfigError(f"exploration must be between 0 and 1, got {self.exploration!r}")
        if int(self.max_tries) < 1:
            raise ConfigError(f"max_tries must be at least 1, got {self.max_tries!r}")
        if int(self.probes) < 1:
            raise ConfigError(f"probes must be at least 1, got {self.probes!r}")
        if not (float(self.explore_band) >= 0.0):
            raise ConfigError(f"explore_band must be >= 0, got {self.explore_band!r}")
        if not (0.0 < float(self.crash_threshold) <= 1.0):
            raise ConfigError(f"crash_threshold must be in (0, 1], got {self.crash_threshold!r}")
        if int(self.known_crash_k) < 0:
            raise ConfigError(f"known_crash_k must be >= 0, got {self.known_crash_k!r}")
        if int(self.warmup) < 2:
            raise ConfigError(f"warmup must be at least 2, got {self.warmup!r}")
        if int(self.min_per_class) < 1:
            raise ConfigError(f"min_per_class must be at least 1, got {self.min_per_class!r}")
        if int(self.chunk) < 0 or int(self.give_up_forced) < 1:
            raise ConfigError(f"chunk must be >= 0 and give_up_forced >= 1, got {self.chunk!r}, {self.give_up_forced!r}")
        if int(self.retrain_every) < 1:
            raise ConfigError(f"retrain_every must be at least 1, got {self.retrain_every!r}")
        thr = self.threshold
        if isinstance(thr, str):
            from ..classify.model import THRESHOLD_POLICIES
            if thr not in THRESHOLD_POLICIES:
                raise ConfigError(f"threshold must be a number in [0, 1] or one of "
                                  f"{', '.join(THRESHOLD_POLICIES)}, got {thr!r}")
        elif isinstance(thr, bool) or not (0.0 <= float(thr) <= 1.0):
            raise ConfigError(f"threshold must be a number in [0, 1], got {thr!r}")
        if check_models and self.mode == "models" and not self.models:
            raise ConfigError("the models filter needs a model registry file (--models)")
        if check_models and self.mode == "models" and not os.path.isfile(self.models or ""):
            raise ConfigError(f"model registry file not found: {self.models}")
        return self


# ------------------------------------------------------------ adapters to classify
@contextlib.contextmanager
def keep_global_rng():
    """Run the body without disturbing Python's and NumPy's global random
    generators. Upstream draws all its choices from them, while our own work
    may draw from them too (importing lightgbm or sklearn.ensemble does), which
    would make a filtered run diverge from the baseline before the filter ever
    acts. Both states are saved on entry and put back on exit."""
    py_state = random.getstate()
    np_mod = sys.modules.get("numpy")
    np_state = np_mod.random.get_state() if np_mod is not None else None
    try:
        yield
    finally:
        random.setstate(py_state)
        if np_state is not None:
            np_mod.random.set_state(np_state)


# The classify package is written alongside; everything this module needs from
# it goes through these two functions.

_REGISTRIES: dict[str, Any] = {}


def load_registry(models_yaml: str):
    """The model registry loaded from ``models_yaml`` (cached per path)."""
    path = os.path.abspath(models_yaml)
    if path not in _REGISTRIES:
        from ..classify import ModelRegistry
        _REGISTRIES[path] = ModelRegistry.load(path)
    return _REGISTRIES[path]


def load_scorer(models_yaml: str, api: str, spec: Optional[ApiSpec] = None):
    """The scorer for ``api`` from the registry, or None when it has none
    (with ``spec``, the registry refuses a model built for other features).
    A scorer has ``score_batch(list[AbstractInput]) -> array of P(valid)`` and
    ``threshold``."""
    registry = load_registry(models_yaml)
    try:
        return registry.model_for(api, spec)
    except (KeyError, LookupError):
        return None


def train_scorer(spec: ApiSpec, inputs: list[AbstractInput], labels: list[int], config: FilterConfig):
    """Train a scorer on labelled inputs (label 1 = valid), with the kind,
    parameters and threshold the registry YAML configures for the API when
    ``config.models`` names one, else ``config``'s."""
    from ..classify import train_model
    if config.models and os.path.isfile(config.models):
        cfg = load_registry(config.models).config_for(spec.name)
        return train_model(spec, inputs, labels, cfg.kind, dict(cfg.params), cfg.threshold,
                           min_per_class=int(config.min_per_class))
    return train_model(spec, inputs, labels, config.kind, dict(config.params) or None, config.threshold,
                       min_per_class=int(config.min_per_class))


def model_spec(scorer) -> Optional[ApiSpec]:
    """The spec a scorer was trained with, when it tells (a ValidityModel
    embeds it in its feature schema); inputs are converted against it."""
    return getattr(getattr(scorer, "schema", None), "spec", None)


INT64_MIN, INT64_MAX = -2 ** 63, 2 ** 63 - 1


def beyond_int64(ai: AbstractInput) -> bool:
    """Does an integer argument, list item, tensor dimension or explicit
    element, or the value range of an integer tensor, lie outside int64?
    (Upstream's huge-value mutations draw such values; the framework refuses
    them before the op runs: "int too big to convert".)"""
    return int_outside(ai, INT64_MIN, INT64_MAX, tensors=True)


def _element_names(rules: Sequence[str]) -> list[str]:
    """Arguments whose elements (``p[i]``, ``p.value``) one of ``rules`` reads."""
    import ast
    from ..learn.evaluate import _parse
    names: list[str] = []
    for r in rules:
        try:
            tree = _parse(r)
        except SyntaxError:
            continue
        for n in ast.walk(tree):
            name = None
            if isinstance(n, ast.Subscript) and isinstance(n.value, ast.Name):
                name = n.value.id
            elif isinstance(n, ast.Attribute) and n.attr == "value" and isinstance(n.value, ast.Name):
                name = n.value.id
            if name is not None and name not in names:
                names.append(name)
    return names


# ------------------------------------------------------------ per-API state

@dataclass
class _Pending:
    ai: Optional[AbstractInput]
    decision: str
    counters: Optional[dict] = None
    score: Optional[float] = None
    #: perf_counter when upstream got the input (its run starts then)
    started: float = 0.0
    #: upstream's solver sample it was drawn from (its order in the runner), if known
    sample: Optional[int] = None


class ApiFilter:
    """Filter state of one API: scorer, statistics, online training data."""

    def __init__(self, api: str, framework: str, hook: "FilterHook"):
        self.api = api
        self.framework = framework
        self.hook = hook
        self.config = hook.config
        self.rng = random.Random(f"{self.config.seed}|{api}")
        self.spec: Optional[ApiSpec] = None
        self.scorer = None
        self.scorer_source = "none"
        self.pending: Optional[_Pending] = None
        warmup = int(self.config.warmup)
        # the campaign's learner and labelling rule: the first model as soon
        # as both classes have min_per_class runs (after the warm-up), then
        # at max(n + retrain_every, n * retrain_factor) labels
        every = int(self.config.retrain_every)
        self.learner = OnlineLearner(self.spec, self._fit, warmup=warmup, retrain_every=every,
                                     retrain_factor=float(self.config.retrain_factor),
                                     retry_after=max(1, min(every, warmup // 10)),
                                     min_per_class=int(self.config.min_per_class))
        # learned rules (config.rules): made once the spec is known
        self.rules: Any = None  # learn.RuleLearner
        self.rule_backlog: list[tuple] = []  # runs before the first passing one
        self.rules_failed: Optional[str] = None
        self.repair_rng = random.Random(f"{self.config.seed}|{api}|repair")
        self._element_rules: tuple[tuple, list[str]] = ((), [])
        # repaired runs against runs that met the rules as drawn, per active
        # rule set: [valid, executed]; repair stops for a rule set whose
        # repairs fail far more often (a rule the repair makes come true
        # meets no passing run that breaks it, so only outcomes can tell)
        self.repair_tally: dict[str, list[int]] = {"repaired": [0, 0], "natural": [0, 0]}
        self.repair_key: tuple = ()
        self.repair_off: Optional[str] = None
        self.repair_offs = 0
        self.messages = InvalidLog()
        # outcomes by the upstream dtype spellings the features cannot see
        # (quantized types convert to the int type of their width)
        self.lossy: dict[tuple, list[int]] = {}
        # attributes the op refused beyond int32 (from its messages)
        self.int32_attrs: set[str] = set()
        self.warned = False
        self.counts = {k: 0 for k in ("generated", "scored", "discarded", "known", "int64_rejected", "rule_rejected",
                                      "lossy_rejected", "int32_rejected", "repaired")
                       + DECISIONS + SAMPLE_COUNTS}
        # crash / timeout inputs seen, by signature (known-crash rule); None: off
        self.crashes: Any = None  # filter.KnownCrashes, made at the first crash
        self.outcomes: dict[str, dict[str, int]] = {}
        self.score_time = 0.0
        #: seconds the hook spent, by phase: upstream's own generator called
        #: by the hook (``generate``), conversion, scoring, online training
        self.phase_time = {k: 0.0 for k in PHASES}
        #: executed runs' wall time (generation handed over -> labelled), by outcome
        self.run_time: dict[str, float] = {}
        self.modes: list[str] = []

    # -- setup
    def prepare(self, arg_list) -> None:
        if self.spec is not None:
            return
        # Online: a spec built from upstream's own argument list matches the
        # converted inputs by construction. Models: the spec the model was
        # trained with (our TF/torch registry spec, usually), so its features
        # line up; no spec lookup is needed, which keeps start-up fast.
        if self.config.mode == "models" and self.scorer is None:
            self.scorer = self.hook.scorer_factory(self.config.models or "",
                                                   convert.api_name(self.api, self.framework), None)
            self.scorer_source = "registry" if self.scorer is not None else "none"
            self.spec = model_spec(self.scorer)
        if self.spec is None:
            self.spec = convert.spec_from_upstream(self.api, arg_list, self.framework)

    def convert(self, arg_list) -> Optional[AbstractInput]:
        t0 = time.perf_counter()
        try:
            return convert.to_abstract_input(self.api, arg_list, self.framework, self.spec)
        except (ValueError, KeyError, TypeError) as e:
            self.warn(f"cannot convert a generated input ({e}); it runs unfiltered")
            return None
        finally:
            self.phase_time["convert"] += time.perf_counter() - t0

    def _generate(self, manager, original: Callable[[Any], Any]):
        t0 = time.perf_counter()
        try:
            return original(manager)
        finally:
            self.phase_time["generate"] += time.perf_counter() - t0
            self.counts["generated"] += 1

    # -- learned rules
    def rule_learner(self):
        """The rule learner (``config.rules``), made once the spec is known."""
        if not self.config.rules or self.spec is None:
            return None
        if self.rules is None:
            from ..learn import RuleLearner
            # rules from the op's own messages only: predicates mined from a
            # few runs (one passing run, early on) are what the classifier
            # learns already, and a wrong one would discard valid inputs
            self.rules = RuleLearner(self.spec, self._rules_usable, sources=("message",))
        return self.rules

    def _rules_usable(self, rules) -> Optional[str]:
        """``check_sat`` of the rule learner. The hook does not solve (upstream
        does), so a rule set is usable when a passing run satisfies it all:
        the learner keeps only rules every passing run satisfies, so one
        passing run is enough. Before any run passed: usable with
        ``early_rules`` (the op's own message is the evidence), else not."""
        from ..learn.evaluate import holds
        passing = self.rules.passing if self.rules is not None else []
        if not passing:
            return None if self.config.early_rules else "no passing run yet"
        if not any(all(holds(e, ai) for e in rules) for ai in passing[-20:]):
            return "no passing run satisfies them together"
        return None

    @staticmethod
    def _lossy_key(ai: AbstractInput) -> tuple:
        return tuple(sorted(str(d) for d in (ai.origin or {}).get("lossy_dtypes") or ()))

    def note_message(self, message: Optional[str]) -> None:
        """Read what an invalid run's message says about value ranges the
        features cannot see: ``Attr strides has value 3838130825486059252
        out of range for an int32`` (upstream's huge-value mutation of list
        attributes; TF reads them as int32)."""
        for m in _INT32_ATTR.finditer(message or ""):
            self.int32_attrs.add(m.group(1))

    def out_of_int32(self, ai: AbstractInput) -> bool:
        """Does an attribute the op refused beyond int32 hold such a value?"""
        from ..filter import INT32_MAX, INT32_MIN
        return any(n in ai.args and int_outside(AbstractInput(ai.api, {n: ai.args[n]}), INT32_MIN, INT32_MAX)
                   for n in self.int32_attrs)

    def lossy_refused(self, ai: AbstractInput) -> bool:
        """Is ``ai`` drawn with upstream dtype spellings (quantized types) that
        were refused ``LOSSY_K`` times and never got past validation? The
        features see them as plain ints, so no model can learn it."""
        key = self._lossy_key(ai)
        if not key:
            return False
        valid, invalid = self.lossy.get(key, (0, 0))
        return valid == 0 and invalid >= LOSSY_K

    def _filtering(self) -> bool:
        """Is there anything to filter with yet (a scorer, an active learned
        rule, a refused dtype spelling)? Never in mode ``none``."""
        if self.config.mode == "none":
            return False
        return (self.scorer is not None or bool(self.active_rules()) or bool(self.int32_attrs)
                or any(v == 0 and i >= LOSSY_K for v, i in self.lossy.values()))

    def active_rules(self) -> list[str]:
        return self.rules.active() if self.rules is not None else []

    def breaks_rule(self, ai: AbstractInput) -> bool:
        """Does ``ai`` break a learned rule that is active now?"""
        active = self.active_rules()
        if not active:
            return False
        from ..learn.evaluate import holds
        t0 = time.perf_counter()
        try:
            return any(not holds(e, ai) for e in active)
        finally:
            self.phase_time["rules"] += time.perf_counter() - t0

    def repairing(self) -> bool:
        """Is repair on for the active rule set? A new rule set starts over."""
        if not self.config.repair:
            return False
        key = tuple(self.active_rules())
        if key != self.repair_key:
            self.repair_key = key
            self.repair_tally = {"repaired": [0, 0], "natural": [0, 0]}
            self.repair_off = None
        return self.repair_off is None

    def _tally_repair(self, p: "_Pending", outcome: str) -> None:
        if p.ai is None or p.decision not in ("accepted", "crash_kept") or outcome not in EXECUTED \
                or not self.config.repair or self.repair_off is not None:
            return
        t = self.repair_tally["repaired" if p.ai.origin.get("repaired") else "natural"]
        t[0] += int(outcome != Outcome.INVALID)
        t[1] += 1
        (rv, rn), (nv, nn) = self.repair_tally["repaired"], self.repair_tally["natural"]
        # (not when repairs never pass: nor do drawn inputs, so far, and the
        # rules that make repairs pass may still be learned: OneHot)
        if rn >= REPAIR_PROBATION and nn >= REPAIR_PROBATION // 2 and rv / rn < nv / nn - REPAIR_MARGIN:
            self.repair_off = (f"repaired runs valid {rv}/{rn}, runs meeting the rules as drawn {nv}/{nn}: "
                               f"drawing again")
            self.repair_offs += 1

    def _allowed(self, fixed: AbstractInput, ai: AbstractInput) -> bool:
        """Does every value the repair changed stay within what upstream's
        op_json enumerates for its argument (a rule saying ``data_format ==
        'NHWC'`` learned from a Conv3D message must not set it)?"""
        spec = self.spec
        if spec is None:
            return True
        for name, v in fixed.args.items():
            if v == ai.args.get(name) or not spec.has_arg(name):
                continue
            allowed = spec.arg(name).allowed
            if allowed and isinstance(v, (str, int)) and not isinstance(v, bool) and v not in allowed:
                return False
        return True

    def pinned(self, arg_list, ai: Optional[AbstractInput]) -> Optional[AbstractInput]:
        """With repair (online): ``ai`` after the hook drew the elements of
        every small int32 tensor upstream would fill in its worker (same
        range) and passed them explicitly, so each run's values are known to
        the rules and the model (a rule on a resize size is otherwise checked
        on values the conversion derives, not the ones that ran). int32 only:
        upstream writes explicit elements as a Python list, which the
        framework makes int32."""
        if ai is None or not self.config.repair or self.config.mode != "online":
            return ai
        from ..learn.evaluate import MAX_ELEMENTS
        names = [n for n, t in ai.args.items() if isinstance(t, TensorDesc) and t.values is None
                 and t.dtype == "int32" and t.rank <= 1 and 0 < t.numel <= MAX_ELEMENTS]
        if not names:
            return ai
        t0 = time.perf_counter()
        try:
            with keep_global_rng():
                drawn = self._draw_elements(ai, names)
                out = self._write(arg_list, ai, drawn) if drawn is not None else None
            if out is None:
                return ai
            out.origin.update(ai.origin)
            return out
        finally:
            self.phase_time["repair"] += time.perf_counter() - t0

    def _draw_elements(self, ai: AbstractInput, names: Sequence[str]) -> Optional[AbstractInput]:
        """A copy of ``ai`` whose small int tensors ``names`` hold elements
        drawn here in their ranges (None if one has no elements to draw)."""
        from ..learn.evaluate import _elements
        seed = self.repair_rng.randrange(2 ** 31)
        args = dict(ai.args)
        for n in names:
            vals = _elements(args[n], seed, n)
            if vals is None:
                return None
            args[n] = dataclasses.replace(args[n], values=tuple(int(v) for v in vals))
        return AbstractInput(ai.api, args, ai.value_seed, list(ai.solved), dict(ai.origin))

    def _write(self, arg_list, ai: AbstractInput, new: AbstractInput,
               check: Callable[[AbstractInput], bool] = lambda _: True) -> Optional[AbstractInput]:
        """Write ``new`` (an edit of ``ai``) into upstream's values and
        return their conversion; None, with the values as they were, when
        upstream's values cannot hold it or the conversion fails ``check``."""
        saved = [a.arg_value for a in arg_list]
        if not convert.write_back(arg_list, ai, new, self.framework):
            return None
        try:
            out: Optional[AbstractInput] = convert.to_abstract_input(self.api, arg_list, self.framework, self.spec)
        except (ValueError, KeyError, TypeError):
            out = None
        if out is None or not check(out):
            for a, v in zip(arg_list, saved):
                a.arg_value = v
            return None
        return out

    def hidden_elements(self, ai: AbstractInput) -> list[str]:
        """Small integer tensors of ``ai`` whose elements an active rule
        reads but upstream draws inside its worker (no explicit values): the
        rule cannot be checked on them, so the hook draws them itself
        (``repaired(pin=...)``) and upstream runs those values."""
        active = self.active_rules()
        if not active:
            return []
        key = tuple(active)
        if self._element_rules[0] != key:
            self._element_rules = (key, _element_names(active))
        from ..learn.evaluate import MAX_ELEMENTS
        out = []
        for name in self._element_rules[1]:
            t = ai.args.get(name)
            if isinstance(t, TensorDesc) and t.values is None and t.rank <= 1 and t.numel <= MAX_ELEMENTS \
                    and t.dtype.startswith(("int", "uint")):
                out.append(name)
        return out

    def repaired(self, arg_list, ai: AbstractInput, count: bool = True,
                 pin: Sequence[str] = ()) -> Optional[AbstractInput]:
        """Edit upstream's drawn values (``arg_list``, converted: ``ai``) to
        meet the active learned rules (learn.repair: the dims, ranks, list
        items, flags or small integer elements a rule names) and return the
        edited input's conversion; None, with the values as drawn, when no
        edit meets them all or upstream's values cannot hold it. Upstream's
        fill is random after its solver sample, so a rule relating two dims
        is rarely met by drawing again (MatMul's inner dims, a perm as long
        as a rank)."""
        from ..learn.evaluate import holds
        from ..learn.repair import repair_all
        t0 = time.perf_counter()
        try:
            active = self.active_rules()
            # pinned elements are drawn here (in the tensor's range) and
            # written out explicitly, so the rules judge what upstream will run
            base = self._draw_elements(ai, pin) if pin else ai
            if base is None:
                return None
            fixed = repair_all(active, base, self.repair_rng)
            if fixed is None or fixed is ai or not self._allowed(fixed, ai):
                return None
            out = self._write(arg_list, ai, fixed, lambda x: all(holds(e, x) for e in active))
            if out is None:
                return None
            out.origin["repaired"] = True
            if count:
                self.counts["repaired"] += 1
            return out
        finally:
            self.phase_time["repair"] += time.perf_counter() - t0

    def warn(self, msg: str) -> None:
        if not self.warned:
            self.warned = True
            print(f"[acetest-ml] {self.api}: {msg}", file=sys.stderr, flush=True)

    def _assess(self, ai: AbstractInput) -> tuple[float, Optional[float]]:
        """(P(valid), P(crash or timeout) or None when the scorer has no crash class)."""
        predict = getattr(self.scorer, "predict_batch", None)
        if callable(predict) and getattr(self.scorer, "has_crash_class", False):
            proba = predict([ai])[0]
            return float(1.0 - proba[0]), float(proba[2])
        return float(self.scorer.score_batch([ai])[0]), None

    def _crash_cut(self) -> float:
        """P(crash) at or above which a candidate is never discarded: the
        crash threshold, or 3x the crash class's training share when that class
        is thin (fewer than ``known_crash_floor`` runs), as in our campaigns."""
        counts = getattr(self.scorer, "counts", None) or {}
        n, c = int(counts.get("n", 0) or 0), int(counts.get("crash", 0) or 0)
        cut = float(self.config.crash_threshold)
        if n and 0 < c < int(self.config.known_crash_floor):
            return min(cut, 3.0 * c / n)
        return cut

    def _may_explore(self) -> bool:
        """Exploration runs stay within ``exploration`` of the rounds run so far."""
        runs = sum(self.counts[d] for d in DECISIONS)
        return self.config.exploration > 0 and self.counts["explored"] < self.config.exploration * (runs + 1)

    # -- the regenerate loop
    def next_input(self, manager, original: Callable[[Any], Any]):
        runner = getattr(manager, "_acetest_ml_runner", None)
        with keep_global_rng():
            if runner is not None:
                self.settle(runner)
            self.prepare(manager.arg_list)
        result = None
        score: Optional[float] = None
        explore_sample = bool(getattr(manager, "_acetest_ml_explore", False))
        if not self._filtering() or explore_sample:
            # no scorer yet, or a solver sample predicted invalid that runs
            # its exploration share of rounds as drawn
            result = self._generate(manager, original)
            with keep_global_rng():
                ai = self.pinned(manager.arg_list, self.convert(manager.arg_list))
            if ai is None:
                decision = "unconvertible"
            else:
                decision = "explored" if explore_sample else "unfiltered"
        else:
            threshold = float(getattr(self.scorer, "threshold", 0.5)) if self.scorer is not None else 0.5
            band = float(self.config.explore_band)
            best: Optional[tuple[float, list, AbstractInput]] = None
            refusals = (("int64_rejected", beyond_int64, -3.0), ("int32_rejected", self.out_of_int32, -3.0),
                        ("lossy_rejected", self.lossy_refused, -2.5))
            decision = ""
            ai = None
            for _ in range(int(self.config.max_tries)):
                result = self._generate(manager, original)
                with keep_global_rng():
                    ai = self.pinned(manager.arg_list, self.convert(manager.arg_list))
                if ai is None:
                    decision = "unconvertible"
                    break
                # refused before scoring, with the rank it has as a last resort:
                # beyond int64 TF cannot convert it ("int too big to convert"),
                # so the op is never reached; the features see neither that nor
                # an int32 attribute the op refused, nor a refused lossy dtype
                refused = next(((key, rank) for key, check, rank in refusals if check(ai)), None)
                if refused is not None:
                    self.counts[refused[0]] += 1
                    self.counts["discarded"] += 1
                    if best is None or best[0] < refused[1]:
                        best = (refused[1], [a.arg_value for a in manager.arg_list], ai)
                    continue
                with keep_global_rng():
                    broken = self.breaks_rule(ai)
                if broken and self._may_explore() and self.rng.random() < 0.5:
                    # a share of rule breakers runs, so that a wrong rule
                    # meets the passing run that rejects it
                    decision = "explored"
                    score = None
                    break
                if self.repairing():
                    hidden = self.hidden_elements(ai)
                    if broken or hidden:
                        with keep_global_rng():
                            fixed = self.repaired(manager.arg_list, ai, pin=hidden)
                        if fixed is not None:
                            ai, broken = fixed, False
                        elif hidden:
                            # the rule reads values upstream draws later: not known to hold
                            broken = True
                if broken:
                    # an active learned rule says the API rejects it
                    self.counts["rule_rejected"] += 1
                    self.counts["discarded"] += 1
                    if best is None or best[0] < -2.0:
                        best = (-2.0, [a.arg_value for a in manager.arg_list], ai)
                    continue
                if self.scorer is None:  # rules only, so far
                    decision = "accepted"
                    score = None
                    break
                t0 = time.perf_counter()
                with keep_global_rng():
                    p, p_crash = self._assess(ai)
                dt = time.perf_counter() - t0
                self.score_time += dt
                self.phase_time["score"] += dt
                self.counts["scored"] += 1
                score = p
                known = False
                if p_crash is not None and p_crash >= self._crash_cut():
                    # predicted to crash or hang: never discarded, unless it is
                    # predicted to reproduce a crash/timeout seen known_crash_k times
                    with keep_global_rng():
                        known = bool(self.crashes is not None and self.crashes.known([ai])[0])
                    if not known:
                        decision = "accepted" if p >= threshold else "crash_kept"
                        break
                    self.counts["known"] += 1
                elif p >= threshold:
                    decision = "accepted"
                    break
                # exploration: a share of the rounds, from the uncertain band
                # below the threshold (or a known crash), as in our campaigns
                if self._may_explore() and (known or p >= threshold - band):
                    decision = "explored"
                    break
                self.counts["discarded"] += 1
                rank = p - (1.0 if known else 0.0)  # a known crash runs last
                if best is None or rank > best[0]:
                    best = (rank, [a.arg_value for a in manager.arg_list], ai)
            if not decision:
                # Every candidate was predicted invalid: run the most plausible one.
                assert best is not None
                for a, v in zip(manager.arg_list, best[1]):
                    a.arg_value = v
                ai = best[2]
                score = best[0] if best[0] >= 0 else (best[0] + 1.0 if best[0] >= -1.0 else None)
                self.counts["discarded"] -= 1
                decision = "forced"
        self.counts[decision] += 1
        counters = ({k: getattr(runner, k, 0) for k in _COUNTERS} if runner is not None else None)
        self.pending = _Pending(ai, decision, counters, score, time.perf_counter(),
                                getattr(manager, "_acetest_ml_sample", None))
        return result

    # -- per-sample round reallocation
    def score_sample(self, manager, generate: Callable[[Any], Any]) -> Optional[float]:
        """The best P(valid) over ``config.probes`` random fills of the solver
        sample ``manager`` holds (None without a scorer). Upstream's random
        streams are left as they were, so its own draws do not change."""
        with keep_global_rng():
            self.prepare(manager.arg_list)
        if not self._filtering():
            return None
        with keep_global_rng():
            inputs = []
            for _ in range(int(self.config.probes)):
                t_probe = time.perf_counter()
                try:
                    generate(manager)
                except Exception:  # upstream's generator gave up on this fill
                    continue
                finally:
                    self.phase_time["probe"] += time.perf_counter() - t_probe
                ai = self.pinned(manager.arg_list, self.convert(manager.arg_list))
                if ai is not None and self.repairing() and self.breaks_rule(ai):
                    # a fill the rules' repair can fix is not a reason to give the sample up
                    ai = self.repaired(manager.arg_list, ai, count=False) or ai
                if ai is not None:
                    inputs.append(ai)
            for arg in manager.arg_list:
                clear = getattr(arg, "clear_value", None)
                if callable(clear):
                    clear()
            if not inputs:
                return None
            # a fill that breaks a learned rule (or has a refused dtype
            # spelling) counts as predicted invalid
            ok = [not (self.out_of_int32(ai) or self.lossy_refused(ai) or self.breaks_rule(ai)) for ai in inputs]
            if self.scorer is None:
                scores = [1.0 if k else 0.0 for k in ok]
            else:
                t0 = time.perf_counter()
                raw = self.scorer.score_batch(inputs)
                dt = time.perf_counter() - t0
                self.score_time += dt
                self.phase_time["score"] += dt
                scores = [float(x) if k else 0.0 for x, k in zip(raw, ok)]
                self.counts["scored"] += len(inputs)
        self.counts["samples_scored"] += 1
        return float(max(scores))

    # -- outcomes
    @staticmethod
    def outcome_of(runner, counters: dict) -> str:
        delta = {k: getattr(runner, k, 0) - counters[k] for k in _COUNTERS}
        if delta["invalid"] > 0:
            return Outcome.INVALID
        if delta["crash"] > 0:
            return Outcome.CRASH
        if delta["timeout"] > 0:
            return Outcome.TIMEOUT
        if delta["OOM"] > 0:
            return OOM
        proc = getattr(runner, "runner_p", None)
        if proc is None or proc.is_alive():
            return Outcome.PASS
        return UNKNOWN  # the worker died but upstream stopped before counting it

    def settle(self, runner, forced_outcome: Optional[str] = None) -> Optional[str]:
        """Label the pending input (the one that ran last) from the runner's
        counters. Returns the outcome, or None when nothing was pending."""
        p = self.pending
        if p is None or p.counters is None:
            return None
        self.pending = None
        outcome = forced_outcome or self.outcome_of(runner, p.counters)
        self.run_time[outcome] = self.run_time.get(outcome, 0.0) + time.perf_counter() - p.started
        by = self.outcomes.setdefault(p.decision, {})
        by[outcome] = by.get(outcome, 0) + 1
        self._tally_repair(p, str(outcome))
        if (outcome in (Outcome.CRASH, Outcome.TIMEOUT) and p.ai is not None and self.spec is not None
                and int(self.config.known_crash_k) > 0):
            if self.crashes is None:
                from ..filter import KnownCrashes
                self.crashes = KnownCrashes(self.spec, int(self.config.known_crash_k))
            proc = getattr(runner, "runner_p", None)
            code = getattr(proc, "exitcode", None)
            sig = "timeout" if outcome == Outcome.TIMEOUT else f"crash (exit {code})"
            self.crashes.observe(p.ai, outcome, sig)
        if self.hook.collector is not None and p.ai is not None:
            if p.sample is not None:
                p.ai.origin["sample"] = p.sample
            self.hook.collector.record(self.spec, p.ai, outcome, p.decision, runner, p.score)
        key = self._lossy_key(p.ai) if p.ai is not None else ()
        if key and outcome in EXECUTED:
            tally = self.lossy.setdefault(key, [0, 0])
            tally[1 if outcome == Outcome.INVALID else 0] += 1
        if self.config.rules and self.config.mode == "online" and not self.rules_failed:
            t0 = time.perf_counter()
            try:
                self._learn_rules(runner, p, str(outcome))
            except Exception as e:  # never take upstream down: go on without rules, but say so
                self.rules_failed = f"{type(e).__name__}: {e}"
                self.rules = None
                self.warn(f"rule learning failed ({self.rules_failed}); going on without learned rules")
            self.phase_time["rules"] += time.perf_counter() - t0
        if self.config.mode == "online" and p.ai is not None:
            errors = self.learner.train_errors
            self.learner.spec = self.spec
            t0 = time.perf_counter()
            trained = self.learner.observe(p.ai, outcome)
            self.phase_time["train"] += time.perf_counter() - t0
            if trained:
                self.scorer = self.learner.model
                self.scorer_source = "online"
            if self.learner.train_errors > errors:  # keep going unfiltered, but say so
                self.warn(f"online training failed ({self.learner.last_error}); running unfiltered")
        return outcome

    def _learn_rules(self, runner, p: "_Pending", outcome: str) -> None:
        message = self.messages.new_text(getattr(runner, "output_dir", None))
        if outcome == Outcome.INVALID:
            self.note_message(message)
        learner = self.rule_learner()
        if learner is None or p.ai is None or outcome not in _RULE_OUTCOMES:
            # not timeouts: upstream's are wall-clock verdicts that include
            # its worker's start-up (the first rounds of a loaded machine
            # time out whatever the input), so a rule the op's own message
            # states is not refused for excluding one; crashes still count
            return
        # an explored run was drawn past the rules: it checks them from the
        # other side (a pass rejects a rule it breaks) without counting in
        # their probation
        outside = p.decision == "explored" and self.breaks_rule(p.ai)
        run = (p.ai, outcome, message if outcome == Outcome.INVALID else None, outside)
        if not learner.passing and outcome != Outcome.PASS and not self.config.early_rules:
            # a rule is checked against the passing runs seen: until one
            # passed, keep the runs and replay them after it
            self.rule_backlog.append(run)
            return
        learner.observe(*run)
        backlog, self.rule_backlog = self.rule_backlog, []
        for r in backlog:
            learner.observe(*r)

    def _fit(self, spec: ApiSpec, inputs: list[AbstractInput], labels: list[int]):
        return self.hook.trainer(spec, inputs, labels, self.config)

    # -- report
    def stats(self) -> dict:
        c = self.counts
        runs = sum(c[d] for d in DECISIONS)
        out: dict[str, Any] = {
            "api": self.api,
            "framework": self.framework,
            "filter": self.config.mode,
            "reallocate": bool(self.config.reallocate),
            "probes": int(self.config.probes),
            "scorer": self.scorer_source,
            "threshold": (float(getattr(self.scorer, "threshold", 0.5)) if self.scorer is not None else None),
            "exploration": self.config.exploration,
            "max_tries": self.config.max_tries,
            "modes": list(self.modes),
            **c,
            "runs": runs,
            "score_time_s": round(self.score_time, 6),
            "hook_time_s": {k: round(v, 3) for k, v in self.phase_time.items()},
            "run_time_s": {k: round(v, 3) for k, v in sorted(self.run_time.items())},
            "score_us_per_candidate": (round(1e6 * self.score_time / c["scored"], 2) if c["scored"] else None),
            "candidates_per_run": (round(c["generated"] / runs, 4) if runs else None),
            "outcomes": self.outcomes,
        }
        if self.config.mode == "online":
            out["online"] = {**self.learner.info(), "warmup": self.config.warmup,
                             "min_per_class": self.config.min_per_class,
                             "retrain_every": self.config.retrain_every,
                             "threshold_policy": self.config.threshold}
        if self.rules is not None:
            out["rules"] = self.rules.info()
        if self.config.repair:
            out["repair"] = {"tally": self.repair_tally, "off": self.repair_off, "times_off": self.repair_offs}
        if self.rules_failed:
            out["rules_failed"] = self.rules_failed
        return out

    def write_stats(self, directory: str) -> Optional[str]:
        if not directory or not os.path.isdir(directory):
            return None
        path = os.path.join(directory, STATS_FILE)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump(self.stats(), f, indent=1, sort_keys=True)
        os.replace(tmp, path)
        return path


# ------------------------------------------------------------ round reallocation

class _Reallocator:
    """Per-runner bookkeeping of the rounds upstream assigns to its solver
    samples (``Runner.run(manager, times)`` once per sample).

    A sample whose every probed fill the scorer rejects keeps only the
    exploration share of its rounds (run unfiltered, so the filter's misses
    stay measured); the rest go to a bank that the next sample predicted
    valid receives. Rounds still banked when upstream is done are spent on
    the accepted samples (round robin), else on the best-scoring ones, so
    the runner still reaches upstream's round count."""

    POOL = 32

    def __init__(self):
        self.bank = 0
        self.pool: list[tuple[float, int, Any]] = []  # (score, order, manager)
        self.order = 0
        self.abandoned: list[Any] = []  # samples given up on, the last resort for banked rounds
        self.samples = 0  # solver samples upstream has run so far

    @classmethod
    def of(cls, runner) -> "_Reallocator":
        r = getattr(runner, "_acetest_ml_realloc", None)
        if r is None:
            r = cls()
            runner._acetest_ml_realloc = r
        return r

    def plan(self, flt: "ApiFilter", manager, times: int) -> int:
        manager._acetest_ml_explore = False
        cfg = flt.config
        if not cfg.reallocate or cfg.mode == "none" or int(times) <= 0:
            return times
        generate = getattr(type(manager).generate_random_args, "__wrapped__", None)
        if generate is None:
            return times
        score = flt.score_sample(manager, generate)
        if score is None:
            return times
        threshold = float(getattr(flt.scorer, "threshold", 0.5))
        self.order += 1
        if score < threshold:
            keep = int(times * cfg.exploration)
            if flt.rng.random() < times * cfg.exploration - keep:
                keep += 1  # stochastic rounding keeps the share right on average
            moved = int(times) - keep
            self.bank += moved
            flt.counts["samples_rejected"] += 1
            flt.counts["rounds_moved"] += moved
            manager._acetest_ml_explore = True
            self._remember(score, manager)
            return keep
        self._remember(score + 1.0, manager)  # accepted samples rank first
        times = int(times) + self.bank
        self.bank = 0
        return times

    def run_in_chunks(self, flt: "ApiFilter", runner, manager, times: int, run: Callable[[int], Any]):
        """Run a sample's rounds ``chunk`` at a time; once a chunk had
        ``give_up_forced`` forced runs (every one of ``max_tries`` candidates
        predicted invalid: a model trained after the sample was accepted now
        rejects all its fills), the sample's remaining rounds go to the bank
        like those of a rejected sample. Measured on Conv2D: 27 of 46 invalid
        runs were one accepted sample's forced rounds ("output depth must be
        evenly divisible by number of groups"). Upstream's per-call counters
        (sample index, per-sample error limits) then count per chunk."""
        cfg = flt.config
        chunk = int(cfg.chunk)
        if (chunk <= 0 or not cfg.reallocate or cfg.mode == "none" or int(times) <= chunk
                or getattr(manager, "_acetest_ml_explore", False) or getattr(runner, "_acetest_ml_spending", False)):
            return run(times)
        left, result = int(times), None
        while left > 0:
            n = min(chunk, left)
            forced, before = flt.counts["forced"], getattr(runner, "total_times", 0)
            result = run(n)
            left -= n
            if getattr(runner, "total_times", 0) - before < n or getattr(runner, "terminated", False):
                break  # upstream stopped the sample (round limit, time, error limit)
            if left > 0 and flt.counts["forced"] - forced >= int(cfg.give_up_forced):
                self.bank += left
                flt.counts["rounds_moved"] += left
                flt.counts["samples_abandoned"] += 1
                self.pool = [t for t in self.pool if t[2] is not manager]
                self.abandoned.append(manager)
                break
        return result

    def _remember(self, rank: float, manager) -> None:
        self.pool.append((rank, self.order, manager))
        self.pool.sort(key=lambda t: (-t[0], t[1]))
        del self.pool[self.POOL:]

    def spend_rest(self, flt: "ApiFilter", runner, run: Callable[[Any, int], Any]) -> None:
        if self.bank <= 0 or not (self.pool or self.abandoned):
            return
        limit = getattr(getattr(runner, "test_option", None), "test_round", None)
        # accepted samples first, else the best-scoring one; when every sample
        # was given up on (one hopeless solver sample, say), its own forced
        # rounds still run: upstream's round count is kept either way
        accepted = ([m for rank, _, m in self.pool if rank >= 1.0] or [self.pool[0][2]]) if self.pool \
            else self.abandoned[-1:]
        # mark them as accepted samples: their rounds go through the filter
        for m in accepted:
            m._acetest_ml_explore = False
        bank, self.bank = self.bank, 0
        chunk = max(1, -(-bank // len(accepted)))
        idle = 0
        i = 0
        runner._acetest_ml_spending = True  # these rounds are not planned again
        try:
            while bank > 0 and idle < len(accepted) and not getattr(runner, "terminated", False):
                if limit is not None and getattr(runner, "total_times", 0) >= limit:
                    break
                n = min(chunk, bank)
                before = getattr(runner, "total_times", 0)
                run(accepted[i % len(accepted)], n)
                done = getattr(runner, "total_times", 0) - before
                flt.counts["rounds_spent_at_end"] += done
                bank -= done
                idle = idle + 1 if done == 0 else 0
                i += 1
        finally:
            runner._acetest_ml_spending = False


# ------------------------------------------------------------ the hook

class _PatchingLoader(importlib.abc.Loader):
    """Runs an upstream module's own loader, then lets the hook patch it."""

    def __init__(self, inner, finder: "_PatchOnImport", name: str):
        self.inner = inner
        self.finder = finder
        self.name = name

    def create_module(self, spec):
        return self.inner.create_module(spec)

    def exec_module(self, module) -> None:
        self.inner.exec_module(module)
        self.finder.loaded(self.name, module)


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """A ``sys.meta_path`` entry that patches upstream's ``APIManager`` and
    ``Runner`` modules right after upstream imports them; it removes itself
    once both are patched."""

    def __init__(self, hook: "FilterHook", names: list[str]):
        self.hook = hook
        self.pending = set(names)

    def find_spec(self, name, path=None, target=None):
        if name not in self.pending:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _PatchingLoader(spec.loader, self, name)
        return spec

    def loaded(self, name: str, module) -> None:
        self.pending.discard(name)
        if not self.pending:
            self.remove()
        with keep_global_rng():
            self.hook._patch_module(name, module)

    def remove(self) -> None:
        if self in sys.meta_path:
            sys.meta_path.remove(self)


class FilterHook:
    """Patches upstream's ``APIManager`` and ``Runner`` classes (given, or
    imported by their upstream module names) and keeps per-API state.
    ``scorer_factory(models_yaml, api, spec)`` and ``trainer(spec, inputs,
    labels, config)`` default to the classify package."""

    def __init__(self, config: FilterConfig, *, scorer_factory=None, trainer=None):
        self.config = config.validate(check_models=scorer_factory is None)
        self.scorer_factory = scorer_factory or load_scorer
        self.trainer = trainer or train_scorer
        self.filters: dict[str, ApiFilter] = {}
        self.collector = None
        if self.config.collect:
            from .collect import Collector
            self.collector = Collector(self.config.collect, self.config.seed)
        self._patched: list[tuple[type, str, Any]] = []
        self._finder: Optional[_PatchOnImport] = None

    def filter_for(self, api: str, framework: str) -> ApiFilter:
        f = self.filters.get(api)
        if f is None:
            f = self.filters[api] = ApiFilter(api, framework, self)
        return f

    @staticmethod
    def _framework(obj) -> str:
        opt = getattr(obj, "test_option", None)
        return getattr(opt, "fw", None) or "tf"

    def install(self, manager_cls=None, runner_cls=None, *, lazy: bool = False) -> "FilterHook":
        """Patch ``manager_cls.generate_random_args`` and ``runner_cls.run`` /
        ``terminate``. A class not given is taken from upstream's module
        (``APIManager`` / ``Runner``): patched now when the module is already
        imported, else when upstream itself imports it. Importing upstream's
        modules ahead of its ``main.py`` would change its import order, and its
        constraint sampling turns out to depend on that (MaxPool3D draws other
        samples), so the hook waits for upstream's own import. ``lazy``: do
        not check now that upstream's modules can be found (at interpreter
        start-up the script's folder is not on ``sys.path`` yet)."""
        if self._patched or self._finder is not None:
            return self
        pending: list[str] = []
        for module, given in ((_MANAGER_MODULE, manager_cls), (_RUNNER_MODULE, runner_cls)):
            if given is not None:
                self._patch(module, given)
            elif module in sys.modules:
                self._patch_module(module, sys.modules[module])
            else:
                pending.append(module)
        if pending:
            missing = [] if lazy else [m for m in pending if importlib.util.find_spec(m) is None]
            if missing:
                raise UpstreamError(f"upstream ACETest module(s) {', '.join(missing)} not found "
                                    "(upstream's Tester/src must be on sys.path)")
            self._finder = _PatchOnImport(self, pending)
            sys.meta_path.insert(0, self._finder)
        return self

    def _patch_module(self, module_name: str, module) -> None:
        cls = getattr(module, _UPSTREAM_CLASSES[module_name], None)
        if not isinstance(cls, type):
            raise UpstreamError(f"upstream ACETest layout not recognised: module {module_name} has no class "
                                f"{_UPSTREAM_CLASSES[module_name]}")
        self._patch(module_name, cls)

    def _patch(self, module_name: str, cls: type) -> None:
        names = ("generate_random_args",) if module_name == _MANAGER_MODULE else ("run", "terminate")
        for name in names:
            if not callable(getattr(cls, name, None)):
                raise UpstreamError(f"upstream ACETest layout not recognised: {cls.__name__}.{name} is missing")
        fns = self._manager_wrappers(cls) if module_name == _MANAGER_MODULE else self._runner_wrappers(cls)
        for name, fn in fns.items():
            self._patched.append((cls, name, cls.__dict__.get(name)))
            fn.__wrapped__ = getattr(cls, name)
            setattr(cls, name, fn)

    def _manager_wrappers(self, manager_cls: type) -> dict[str, Callable]:
        hook = self
        gen_orig = manager_cls.generate_random_args

        def generate_random_args(manager, *args, **kwargs):
            flt = hook.filter_for(manager.api_name, hook._framework(manager))
            return flt.next_input(manager, lambda m: gen_orig(m, *args, **kwargs))

        return {"generate_random_args": generate_random_args}

    def _runner_wrappers(self, runner_cls: type) -> dict[str, Callable]:
        hook = self
        run_orig = runner_cls.run
        term_orig = runner_cls.terminate

        def run(runner, manager, times, *args, **kwargs):
            flt = hook.filter_for(runner.api_name, hook._framework(runner))
            mode = getattr(runner, "mode", None)
            if mode and mode not in flt.modes:
                flt.modes.append(mode)
            if hook.collector is not None:
                hook.collector.mark_log(getattr(runner, "output_dir", None))
            flt.messages.mark(getattr(runner, "output_dir", None))
            realloc = _Reallocator.of(runner)
            if getattr(manager, "_acetest_ml_sample", None) is None:
                # upstream's solver samples in the order it runs them (the
                # collected runs name theirs: which samples ever pass)
                manager._acetest_ml_sample = realloc.samples
                realloc.samples += 1
            if not getattr(runner, "_acetest_ml_spending", False):
                times = realloc.plan(flt, manager, times)
            manager._acetest_ml_runner = runner
            runner._acetest_ml_in_run = True
            try:
                return _Reallocator.of(runner).run_in_chunks(
                    flt, runner, manager, times, lambda n: run_orig(runner, manager, n, *args, **kwargs))
            finally:
                runner._acetest_ml_in_run = False
                with keep_global_rng():
                    flt.settle(runner)
                    manager._acetest_ml_runner = None
                    flt.write_stats(getattr(runner, "output_dir", None))

        def terminate(runner, msg=None, *args, **kwargs):
            flt = hook.filter_for(runner.api_name, hook._framework(runner))
            if msg is None and not getattr(runner, "terminated", False) \
                    and not getattr(runner, "_acetest_ml_in_run", False):
                # upstream is done with its samples: spend the rounds moved off
                # rejected samples that no later sample took
                _Reallocator.of(runner).spend_rest(flt, runner, lambda m, n: run(runner, m, n))
            # A message means upstream gave up on the API after the last run
            # raised an "unsupported" error, which it does not count.
            with keep_global_rng():
                flt.settle(runner, forced_outcome=UNSUPPORTED if msg is not None else None)
            try:
                return term_orig(runner, msg, *args, **kwargs)
            finally:
                with keep_global_rng():
                    flt.write_stats(getattr(runner, "output_dir", None))

        return {"run": run, "terminate": terminate}

    @property
    def waiting_for(self) -> list[str]:
        """Upstream modules the hook will patch when they are imported."""
        return sorted(self._finder.pending) if self._finder is not None else []

    def uninstall(self) -> None:
        if self._finder is not None:
            self._finder.remove()
            self._finder = None
        for cls, name, orig in reversed(self._patched):
            if orig is None:
                delattr(cls, name)
            else:
                setattr(cls, name, orig)
        self._patched.clear()

    def stats(self) -> dict[str, dict]:
        return {api: f.stats() for api, f in self.filters.items()}


def install(config: FilterConfig, *, lazy: bool = False, **kwargs) -> FilterHook:
    """Create a FilterHook and patch upstream's modules (which must be
    importable: upstream's ``Tester/src`` on ``sys.path``), now if they are
    imported, else as upstream imports them.

    The model registry is *not* loaded here but when the first input of an API
    is generated: loading it imports the classifier libraries (lightgbm,
    sklearn), which start threads, and upstream's constraint sampling (forked
    worker processes) draws other samples when threads are running. Validate
    the YAML before starting upstream (``run_upstream`` does, in its own
    process). ``lazy``: see :meth:`FilterHook.install`."""
    with keep_global_rng():
        return FilterHook(config, **kwargs).install(lazy=lazy)


def read_stats(output_root: str) -> dict[str, dict]:
    """Every per-API stats file under ``output_root`` (an upstream
    ``output_<fw>_<round>`` folder), keyed by API."""
    out: dict[str, dict] = {}
    if not os.path.isdir(output_root):
        return out
    for name in sorted(os.listdir(output_root)):
        path = os.path.join(output_root, name, STATS_FILE)
        if os.path.isfile(path):
            try:
                with open(path) as f:
                    out[name] = json.load(f)
            except (OSError, ValueError):
                continue
    return out
