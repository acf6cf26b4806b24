"""The campaign side of ``--ml-filter``: offline (a trained model from the
YAML registry) and online (learn from the campaign's own runs).

A filter exposes ``scores(batch) -> array | None`` (None while it is still
warming up: run everything), ``threshold``, ``observe(ai, outcome)`` and
``info()`` (what the summary reports). Decisions (accept / explore /
discard) are taken by the campaign loop, so the filters stay free of
campaign logic and the scoring model itself is reusable elsewhere (the
upstream ACETest hook uses the same ValidityModel).
"""
from __future__ import annotations

import time
from typing import Optional

from .learner import OnlineLearner
from .model import AbstractInput, ApiSpec
from .outcome import Outcome


def check_models_config(path: str, models_dir: str | None = None) -> None:
    """Load the model registry once so a broken YAML stops the CLI early."""
    from .classify import ModelRegistry
    ModelRegistry.load(path, models_dir)


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


class OfflineFilter:
    mode = "offline"

    def __init__(self, model, source: str):
        self.model = model
        self.source = source
        self.threshold = float(model.threshold)
        self.timing = _Timing()

    active = True

    def scores(self, batch: list[AbstractInput]):
        return self.timing.timed(self.model.score_batch, batch)

    def observe(self, ai: AbstractInput, outcome: Outcome) -> None:
        pass

    def info(self) -> dict:
        return {"mode": self.mode, "model": self.source,
                "score_us_per_candidate": self.timing.us_per_candidate}


class OnlineFilter:
    """Runs unfiltered for ``warmup`` labelled runs, then trains a model of
    the registry's configured kind and filters, retraining every
    ``retrain_every`` new labels (an :class:`~acetest_ml.learner.OnlineLearner`,
    the same one the upstream hook uses)."""

    mode = "online"

    def __init__(self, spec: ApiSpec, config, *, warmup: int = 60, retrain_every: int = 50,
                 min_per_class: int = 5, note: str | None = None):
        self.spec = spec
        self.config = config
        self.learner = OnlineLearner(spec, self._fit, warmup=warmup, retrain_every=retrain_every,
                                     retry_after=retrain_every, min_per_class=min_per_class)
        self.note = note
        self.timing = _Timing()

    def _fit(self, spec: ApiSpec, inputs, labels):
        from .classify import train_model
        return train_model(spec, inputs, labels, kind=self.config.kind, params=self.config.params,
                           threshold=self.config.threshold,
                           min_per_class=self.learner.min_per_class)

    @property
    def model(self):
        return self.learner.model

    @property
    def active(self) -> bool:
        return self.model is not None

    @property
    def threshold(self) -> float:
        return float(self.model.threshold) if self.model is not None else 0.5

    def scores(self, batch: list[AbstractInput]):
        if self.model is None:
            return None
        return self.timing.timed(self.model.score_batch, batch)

    def observe(self, ai: AbstractInput, outcome: str) -> None:
        self.learner.observe(ai, outcome)

    def info(self) -> dict:
        li = self.learner.info()
        return {"mode": self.mode, "model": "online", "note": self.note,
                "score_us_per_candidate": self.timing.us_per_candidate,
                "retrains": li["trainings"], "labels": li["labelled"],
                "learner": li}


def make_filter(cfg, spec: ApiSpec, store):
    """The filter for one API of a campaign (offline model, or online when
    the registry has none / ``--ml-filter online``)."""
    from .classify import ModelRegistry
    registry = ModelRegistry.load(cfg.models, cfg.models_dir)
    note = None
    if cfg.ml_filter == "offline":
        model = registry.model_for(spec.name, spec)
        if model is not None:
            return OfflineFilter(model, str(registry.config_for(spec.name).model_path))
        note = "no model in registry: online mode"
    f = OnlineFilter(spec, registry.config_for(spec.name), warmup=cfg.warmup,
                     retrain_every=cfg.retrain_every, note=note)
    # a resumed campaign learns again from what it recorded
    from .campaign import api_seed
    recs = [r for r in store.records(spec.name, executed_only=True, seed=api_seed(cfg.seed, spec.name))]
    for r in recs:
        f.learner.add(r.input, r.outcome)
    f.learner.maybe_train()
    return f
