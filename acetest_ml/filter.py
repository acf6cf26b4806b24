"""The campaign side of ``--ml-filter``: offline (a trained model from the
YAML registry) and online (learn from the campaign's own runs).

A filter exposes ``assess(batch) -> Assessment | None`` (None while it is
still warming up: run everything), ``threshold``, ``observe(ai, outcome,
signature)`` and ``info()`` (what the summary reports). :func:`decide` turns
an assessment into per-candidate decisions; the campaign loop then spends the
exploration share. The scoring model itself is reusable elsewhere (the
upstream ACETest hook uses the same ValidityModel).

Crash-aware filtering (the model keeps crash/timeout as a class of its own):

- a candidate whose crash probability reaches ``crash_threshold`` is never
  discarded: it is accepted whatever its validity score;
- once a crash signature has been seen ``known_crash_k`` times, a predicted
  crash whose nearest recorded crash input (in feature space) has that
  signature is *known*: it runs only from the exploration share, so the budget
  goes to new behaviour;
- exploration runs predicted-invalid candidates from the uncertain band
  (score within ``explore_band`` below the threshold) and known crashes,
  within the exploration share of the executed budget;
- thin crash classes (``known_crash_floor``): a model trained on fewer than
  that many crash/timeout runs rarely gives any input P(crash) >= the
  threshold, so its crash cut is lowered to 3x the class's share of its
  training runs;
- integer arguments or list items outside the int32 range (huge strides,
  dilations, sizes) are never discarded: TensorFlow's attribute checks abort
  on them (``mkl_layout_pass ... has value -N out of range``) and the
  features, which clip such values, cannot tell them from ordinary ones;
- once ``known_crash_floor`` candidates in a row were not run, the next
  known crash runs (an API whose inputs all crash or are invalid would
  otherwise spend its time drawing and scoring); after 4x that many, the
  next predicted-invalid one runs (a model that rejects nearly everything,
  e.g. after learned rules moved the inputs away from its training runs,
  cannot starve the API).
- lift check (``lift_check``): the filter's predicted-invalid inputs that
  ran anyway (exploration, cheap and bypass runs) are compared with its
  accepted ones (:class:`Lift`); while the accepted ones do not pass
  clearly more often, discarding buys no pass rate and only costs
  candidates, so predicted-invalid inputs run (recorded as ``bypass``). A
  model trained before learned rules moved the inputs can reject nearly
  every input that now passes (ResizeNearestNeighbor: 72 of 74 explored
  rejects passed); an API whose inputs never pass gains nothing either.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

from .learner import Label, OnlineLearner, label_of
from .model import AbstractInput, ApiSpec, TensorDesc
from .outcome import Decision, Outcome


def check_models_config(path: str, models_dir: str | None = None, apis: Sequence[str] = ()) -> None:
    """Load the model registry once so a broken YAML stops the CLI early, and
    the saved model of each of ``apis`` that has one, so a corrupt model file
    (or one of another kind) is a one-line error before anything runs instead
    of an API recorded as failing in our code. (The feature schema is checked
    against the spec when the API starts.)"""
    from .classify import ModelRegistry
    registry = ModelRegistry.load(path, models_dir)
    for api in apis:
        registry.model_for(api)


class _Timing:
    def __init__(self):
        self.score_s = 0.0
        self.scored = 0

    def timed(self, fn, batch):
        t = time.perf_counter()
        out = fn(batch)
        self.score_s += time.perf_counter() - t
        self.scored += len(batch)
        return out

    @property
    def us_per_candidate(self) -> Optional[float]:
        return 1e6 * self.score_s / self.scored if self.scored else None


@dataclass
class Assessment:
    """What the model says about a batch: P(not invalid), P(crash/timeout)."""

    scores: np.ndarray
    crash: np.ndarray


#: features beyond this magnitude (huge dims and values, inf) are clipped
#: for the nearest-crash distance: an inf or float32 overflow there made
#: every distance NaN, and argmin then named the first recorded crash
_FEATURE_CLIP = 1e12


def _finite(m) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    return np.clip(np.nan_to_num(m, nan=-1.0, posinf=_FEATURE_CLIP, neginf=-_FEATURE_CLIP),
                   -_FEATURE_CLIP, _FEATURE_CLIP)


class KnownCrashes:
    """The crash inputs of a campaign and their signatures; predicts the
    signature a candidate would reproduce as that of its nearest recorded
    crash input (range-scaled L1 distance over the shape features) among the
    recorded crashes whose arguments holding an integer outside int32 are
    the same as the candidate's; with no such crash recorded the signature
    is unknown (None). The features clip huge integers, and which attribute
    overflows decides which check aborts: DepthwiseConv2dNative's
    ``strides`` and ``dilations`` aborts are two signatures, and a dilations
    overflow must not pass for a known strides one."""

    def __init__(self, spec: ApiSpec, k: int):
        self.k = int(k)
        self.spec = spec
        self._schema = None
        self.rows: list[np.ndarray] = []
        self.flags: list[tuple] = []  # per crash: the arguments beyond int32
        self._ref: Any = None
        self.sigs: list[str] = []
        self.counts: dict[str, int] = {}

    def schema(self):
        if self._schema is None:
            from .features import FeatureSchema
            self._schema = FeatureSchema.for_spec(self.spec)
        return self._schema

    def observe(self, ai: AbstractInput, outcome, signature: Optional[str]) -> None:
        if label_of(outcome) != Label.CRASH or self.k <= 0:
            return
        sig = signature or str(getattr(outcome, "value", outcome))
        self.counts[sig] = self.counts.get(sig, 0) + 1
        self.rows.append(self.schema().matrix([ai])[0])
        self.flags.append(self._flags(ai))
        self.sigs.append(sig)

    def _flags(self, ai: AbstractInput) -> tuple:
        return tuple(a.name for a in self.spec.args if _arg_beyond_int32(ai.args.get(a.name)))

    @property
    def saturated(self) -> set[str]:
        return {s for s, n in self.counts.items() if self.k > 0 and n >= self.k}

    def predict(self, batch: list[AbstractInput]) -> list[Optional[str]]:
        """The nearest recorded crash's signature for each candidate."""
        if not self.rows or not batch:
            return [None] * len(batch)
        ref, groups = self._reference()
        X = _finite(self.schema().matrix(batch))
        span = np.maximum(ref.max(axis=0), X.max(axis=0)) - np.minimum(ref.min(axis=0), X.min(axis=0))
        span[span == 0] = 1.0
        d = (np.abs(X[:, None, :] - ref[None, :, :]) / span).sum(axis=2)
        out: list[Optional[str]] = []
        for i, ai in enumerate(batch):
            ix = groups.get(self._flags(ai))
            if ix is None:
                out.append(None)  # overflows no recorded crash had: unknown
                continue
            out.append(self.sigs[int(ix[int(d[i, ix].argmin())])])
        return out

    def _reference(self):
        """The recorded crash rows as one matrix, and their indices by
        overflow pattern (rebuilt only after new crashes)."""
        if self._ref is None or len(self._ref[0]) != len(self.rows):
            groups: dict[tuple, list[int]] = {}
            for j, f in enumerate(self.flags):
                groups.setdefault(f, []).append(j)
            self._ref = (_finite(np.vstack(self.rows)),
                         {f: np.array(ix) for f, ix in groups.items()})
        return self._ref

    def known(self, batch: list[AbstractInput]) -> np.ndarray:
        sat = self.saturated
        if not sat:
            return np.zeros(len(batch), dtype=bool)
        return np.array([s in sat for s in self.predict(batch)], dtype=bool)


INT32_MIN, INT32_MAX = -2 ** 31, 2 ** 31 - 1


class Lift:
    """Does discarding predicted-invalid inputs buy pass rate on this API?

    Tallies the executed runs the model accepted and the executed runs it
    had scored below its threshold (explored, cheap or bypass runs), and
    compares their pass rates as posterior means under a Beta prior of
    ``PRIOR`` pseudo-runs centred on the API's pooled pass rate (so two
    tallies without a pass both sit near zero instead of at the prior's
    0.5). The filter has lift while ``m_accepted - m_rejected`` exceeds
    ``MARGIN_SHARE`` of ``m_accepted`` plus ``MARGIN``. Without lift the
    loop runs predicted-invalid inputs instead of discarding them; the
    runs it then makes are tallied too, so a lift that shows up later (or
    was hidden by the exploration band's higher scores) switches the
    discards back on. The verdict waits for ``MIN_ACCEPTED`` accepted runs
    and ``MIN_REJECTED`` rejected ones, except that accepted runs that
    never pass (``MIN_ACCEPTED_ZERO`` of them) are enough on their own.
    Tallies come from stored decisions and scores, so a resumed campaign
    rebuilds the same verdict."""

    PRIOR = 2.0
    MARGIN = 0.02
    MARGIN_SHARE = 0.1
    MIN_ACCEPTED = 3
    MIN_REJECTED = 6
    MIN_ACCEPTED_ZERO = 16
    #: stored decisions whose runs count as rejected when scored below the threshold
    REJECT_RUNS = (Decision.EXPLORE, Decision.CHEAP, Decision.BYPASS)

    def __init__(self):
        self.n = {True: 0, False: 0}
        self.p = {True: 0, False: 0}

    def tally(self, decision: str, score: Optional[float], threshold: float, outcome) -> None:
        """One executed run with its stored decision and score."""
        if decision == Decision.ACCEPT and score is not None and score >= threshold:
            key = True  # (a predicted crash accepted below the threshold is neither)
        elif decision in self.REJECT_RUNS and score is not None and score < threshold:
            key = False
        else:
            return
        self.n[key] += 1
        self.p[key] += int(outcome == Outcome.PASS)

    def means(self) -> tuple[float, float]:
        n, p = self.n, self.p
        q = (p[True] + p[False] + 1.0) / (n[True] + n[False] + 2.0)
        return tuple((p[k] + self.PRIOR * q) / (n[k] + self.PRIOR) for k in (True, False))  # type: ignore[return-value]

    @property
    def none(self) -> bool:
        """True when the runs so far show the filter buys no pass rate."""
        na, nr = self.n[True], self.n[False]
        if self.p[True] == 0 and na >= self.MIN_ACCEPTED_ZERO:
            return True
        if na < self.MIN_ACCEPTED or nr < self.MIN_REJECTED:
            return False
        m_acc, m_rej = self.means()
        return m_acc - m_rej <= self.MARGIN_SHARE * m_acc + self.MARGIN

    def info(self) -> dict:
        m_acc, m_rej = self.means()
        return {"accepted_runs": self.n[True], "accepted_passes": self.p[True],
                "rejected_runs": self.n[False], "rejected_passes": self.p[False],
                "accepted_mean": round(m_acc, 4), "rejected_mean": round(m_rej, 4),
                "no_lift": self.none}


def int_outside(ai: AbstractInput, lo: int, hi: int, *, tensors: bool = False) -> bool:
    """Does an integer argument or list item lie outside [lo, hi]? With
    ``tensors``, also a tensor's dimensions and explicit integer elements,
    and the bounds an integer tensor's elements are drawn between."""
    return _values_outside(list(ai.args.values()), lo, hi, tensors)


def _values_outside(stack: list, lo: int, hi: int, tensors: bool = False) -> bool:
    while stack:
        v = stack.pop()
        if isinstance(v, bool):
            continue
        if isinstance(v, int):
            if v < lo or v > hi:
                return True
        elif isinstance(v, (list, tuple)):
            stack.extend(v)
        elif tensors and isinstance(v, TensorDesc):
            stack.extend(v.shape or ())
            stack.extend(x for x in (v.values or ()) if isinstance(x, int))
            dtype = str(v.dtype).lower().rsplit(".", 1)[-1]
            if dtype.startswith(("int", "uint")) and any(
                    b is not None and not (lo <= b <= hi) for b in (v.low, v.high)):
                return True
    return False


def _arg_beyond_int32(v) -> bool:
    """Does one argument value (an integer or a list of them) leave int32?"""
    return _values_outside([v], INT32_MIN, INT32_MAX)


def beyond_int32(ai: AbstractInput) -> bool:
    """Does an integer argument (or list item) lie outside the int32 range?"""
    return int_outside(ai, INT32_MIN, INT32_MAX)


class _Filter:
    """Scoring common to both modes (``self.model`` is a ValidityModel or None)."""

    model: Any = None
    mode: str = ""

    def __init__(self, spec: ApiSpec, *, known_crash_k: int = 0, crash_threshold: float = 0.5,
                 known_crash_floor: int = 0):
        self.spec = spec
        self.timing = _Timing()
        self.crashes = KnownCrashes(spec, known_crash_k)
        self.crash_threshold = float(crash_threshold)
        self.known_crash_floor = int(known_crash_floor)
        self.counts = {"crash_kept": 0, "known": 0, "int32_kept": 0, "floor_runs": 0,
                       "reject_floor_runs": 0}
        self.lift = Lift()

    @property
    def crash_cut(self) -> float:
        """P(crash) at or above which a candidate is never discarded: the
        threshold, or 3x the crash class's training share when that class
        has fewer than ``known_crash_floor`` examples."""
        counts = getattr(self.model, "counts", None) or {}
        n, c = int(counts.get("n", 0) or 0), int(counts.get("crash", 0) or 0)
        if n and 0 < c < self.known_crash_floor:
            return min(self.crash_threshold, 3.0 * c / n)
        return self.crash_threshold

    @property
    def active(self) -> bool:
        return self.model is not None

    @property
    def threshold(self) -> float:
        return float(self.model.threshold) if self.model is not None else 0.5

    def assess(self, batch: list[AbstractInput]) -> Optional[Assessment]:
        if self.model is None:
            return None
        proba = self.timing.timed(self.model.predict_batch, batch)
        return Assessment(1.0 - proba[:, 0], proba[:, 2])

    def settle_crash(self, ai: AbstractInput, score: float) -> str:
        """A predicted crash: ``known`` when it is predicted to reproduce a
        signature seen ``known_crash_k`` times, else ``accept``."""
        if self.crashes.saturated and bool(self.crashes.known([ai])[0]):
            self.counts["known"] += 1
            return Decision.KNOWN
        if score < self.threshold:
            self.counts["crash_kept"] += 1
        return Decision.ACCEPT

    def scores(self, batch: list[AbstractInput]):
        a = self.assess(batch)
        return None if a is None else a.scores

    def observe(self, ai: AbstractInput, outcome, signature: Optional[str] = None) -> None:
        self.crashes.observe(ai, outcome, signature)

    def tally(self, decision: str, score: Optional[float], outcome) -> None:
        """An executed run's stored decision and score (the lift check)."""
        self.lift.tally(decision, score, self.threshold, outcome)

    def info(self) -> dict:
        return {"mode": self.mode, "lift": self.lift.info(),
                "score_us_per_candidate": self.timing.us_per_candidate,
                "crash_threshold": self.crash_threshold, "known_crash_k": self.crashes.k,
                "known_crash_floor": self.known_crash_floor,
                "crash_cut": self.crash_cut if self.model is not None else None,
                "crash_class": bool(self.model is not None and self.model.has_crash_class),
                "signatures_seen": dict(self.crashes.counts), **self.counts}


def decide(filt, batch: list[AbstractInput]):
    """-> (scores, decisions). decision: warmup (no model yet) / accept /
    reject (predicted invalid) / crash (predicted to crash or hang: never
    discarded; :meth:`_Filter.settle_crash` makes it accept or known when its
    turn comes, after the runs before it taught the filter their signatures).
    The loop turns reject and known into explore or discard / known."""
    a = filt.assess(batch)
    if a is None:
        return [None] * len(batch), [Decision.WARMUP] * len(batch)
    thr = filt.threshold
    cut = filt.crash_cut if hasattr(filt, "crash_cut") else filt.crash_threshold
    out = []
    for ai, s, c in zip(batch, a.scores, a.crash):
        if c >= cut:
            out.append(Decision.CRASH)
        elif beyond_int32(ai):
            filt.counts["int32_kept"] = filt.counts.get("int32_kept", 0) + 1
            out.append(Decision.CRASH)
        else:
            out.append(Decision.ACCEPT if s >= thr else Decision.REJECT)
    return [float(s) for s in a.scores], out


def explorable(decision: str, score: Optional[float], threshold: float, band: float) -> bool:
    """May a candidate the filter would not run be explored? Known crashes
    always; predicted-invalid ones only from the uncertain band below the
    threshold (``band`` >= 1 explores every score)."""
    if decision == Decision.KNOWN:
        return True
    return decision == Decision.REJECT and score is not None and score >= threshold - band


class RateGate:
    """Filter policy ``rate``: is a predicted-invalid candidate worth its run?

    The candidate is already drawn, so what a run costs is its execution
    time. Run it when what it is expected to give, ``score`` valid runs (the
    model's P(not invalid)), arrives at least as fast as the API's valid runs
    do so far: ``score / t_invalid >= valid rate``, with ``t_invalid`` the
    measured wall time of the API's invalid runs (a predicted-invalid input
    that runs is mostly one of those), timed on the runs the model did not
    accept (exploration, cheap and warm-up runs) once there are
    ``MIN_TIMED`` of those: inputs the model accepts and that still fail get
    further into the kernel and cost more than an early shape check.
    Discarding then only drops inputs whose run would lower valid executions
    per second, and where invalid runs cost
    about nothing (a shape check failing in microseconds) the API keeps the
    unfiltered stream's executions, and with them its crashes. Achieved rate
    and invalid-run time are measured, so decisions depend on timing; the
    inputs themselves do not (candidate i is the same whatever was run).

    Until an invalid run has been timed, one predicted-invalid candidate in
    ``PROBE_EVERY`` (the first one included) runs to time it.
    """

    PROBE_EVERY = 16
    MIN_TIMED = 3

    def __init__(self, passes: int = 0, elapsed: float = 0.0):
        self.passes = int(passes)
        self.elapsed0 = float(elapsed)
        self._t: dict[bool, Optional[float]] = {False: None, True: None}
        self._n: dict[bool, int] = {False: 0, True: 0}
        self.let_through = 0
        self._since_probe = self.PROBE_EVERY - 1

    @property
    def t_invalid(self) -> Optional[float]:
        """Seconds per invalid run: of the runs the model did not accept
        once there are MIN_TIMED of them, else of any."""
        if self._n[False] >= self.MIN_TIMED:
            return self._t[False]
        return self._t[True]

    def observe(self, outcome, wall_s: float, accepted: bool = False) -> None:
        if outcome == Outcome.PASS:
            self.passes += 1
        elif outcome == Outcome.INVALID:
            w = max(0.0, float(wall_s))
            for key in ({True, bool(accepted)}):  # True: any run; False: not accepted
                self._n[key] += 1
                t = self._t[key]
                # a running mean over the first 20, then an exponential average
                self._t[key] = w if t is None else t + max(1.0 / self._n[key], 0.05) * (w - t)

    def rate(self, elapsed: float) -> float:
        """Valid runs per second so far (one pass and one second of prior)."""
        return (self.passes + 1) / (self.elapsed0 + max(0.0, elapsed) + 1.0)

    def worth(self, score: Optional[float], elapsed: float) -> bool:
        if score is None:
            return False
        if self.t_invalid is None:
            self._since_probe += 1
            if self._since_probe < self.PROBE_EVERY:
                return False
            self._since_probe = 0
            self.let_through += 1
            return True
        if float(score) >= self.rate(elapsed) * self.t_invalid:
            self.let_through += 1
            return True
        return False

    def info(self, elapsed: float) -> dict:
        return {"policy": "rate", "t_invalid_ms": (None if self.t_invalid is None
                                                   else round(1e3 * self.t_invalid, 3)),
                "timed_not_accepted": self._n[False], "timed_any": self._n[True],
                "valid_rate": round(self.rate(elapsed), 3), "let_through": self.let_through}


class OfflineFilter(_Filter):
    mode = "offline"

    def __init__(self, model, source: str, spec: Optional[ApiSpec] = None, **kw):
        super().__init__(spec or model.schema.spec, **kw)
        self.model = model
        self.source = source

    def info(self) -> dict:
        return {**super().info(), "model": self.source}


class OnlineFilter(_Filter):
    """Runs unfiltered for ``warmup`` labelled runs, then trains a model of
    the registry's configured kind and filters, retraining every
    ``retrain_every`` new labels (an :class:`~acetest_ml.learner.OnlineLearner`,
    the same one the upstream hook uses)."""

    mode = "online"

    def __init__(self, spec: ApiSpec, config, *, warmup: int = 60, retrain_every: int = 50,
                 min_per_class: int = 5, note: str | None = None, **kw):
        super().__init__(spec, **kw)
        self.config = config
        self.learner = OnlineLearner(spec, self._fit, warmup=warmup, retrain_every=retrain_every,
                                     retry_after=retrain_every, min_per_class=min_per_class)
        self.note = note

    def _fit(self, spec: ApiSpec, inputs, labels):
        from .classify import train_model
        return train_model(spec, inputs, labels, kind=self.config.kind, params=self.config.params,
                           threshold=self.config.threshold,
                           min_per_class=self.learner.min_per_class)

    @property  # type: ignore[override]
    def model(self):
        return self.learner.model

    def observe(self, ai: AbstractInput, outcome, signature: Optional[str] = None) -> None:
        super().observe(ai, outcome, signature)
        self.learner.observe(ai, outcome)

    def info(self) -> dict:
        li = self.learner.info()
        return {**super().info(), "model": "online", "note": self.note,
                "retrains": li["trainings"], "labels": li["labelled"], "learner": li}


def make_filter(cfg, spec: ApiSpec, store):
    """The filter for one API of a campaign (offline model, or online when
    the registry has none / ``--ml-filter online``). A resumed campaign
    learns again from what it recorded."""
    from .campaign import api_seed
    from .classify import ModelRegistry
    registry = ModelRegistry.load(cfg.models, cfg.models_dir)
    kw: dict[str, Any] = {"known_crash_k": getattr(cfg, "known_crash_k", 0),
          "crash_threshold": getattr(cfg, "crash_threshold", 0.5),
          "known_crash_floor": getattr(cfg, "known_crash_floor", 0)}
    note = None
    f: _Filter | None = None
    if cfg.ml_filter == "offline":
        model = registry.model_for(spec.name, spec)
        if model is not None:
            f = OfflineFilter(model, str(registry.config_for(spec.name).model_path), spec, **kw)
        else:
            note = "no model in registry: online mode"
    if f is None:
        f = OnlineFilter(spec, registry.config_for(spec.name), warmup=cfg.warmup,
                         retrain_every=cfg.retrain_every, note=note, **kw)
    for r in store.records(spec.name, executed_only=True, seed=api_seed(cfg.seed, spec.name)):
        f.crashes.observe(r.input, r.outcome, r.signature)
        if isinstance(f, OnlineFilter):
            f.learner.add(r.input, r.outcome)
        f.tally(r.decision, r.score, r.outcome)
    if isinstance(f, OnlineFilter):
        f.learner.maybe_train()
    return f
