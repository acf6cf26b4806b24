"""The labelling rule and the online learner, shared by the campaign's
``--ml-filter online``, the upstream ACETest hook and the ``train`` / ``eval``
datasets.

The rule (:func:`label_of`): an executed run is labelled by what it tells
about the API's input validation.

- ``pass``    -> :attr:`Label.PASS`    (validation accepted it, the call returned)
- ``invalid`` -> :attr:`Label.INVALID` (the API rejected it)
- ``crash`` / ``timeout`` -> :attr:`Label.CRASH` (it got past validation, then
  the worker died or hung: a candidate bug, never "invalid")
- anything else (skipped, oom, unsupported, unknown) -> no label.

A binary validity view (``valid = label != INVALID``) is what a two-class
model learns; crash-aware models keep the three classes apart.

This module imports no classifier library: the upstream hook loads it while
upstream is still sampling.
"""
from __future__ import annotations

import enum
import math
from typing import Any, Callable, Optional, Sequence

from .model import AbstractInput, ApiSpec
from .outcome import Outcome


class Label(enum.IntEnum):
    INVALID = 0
    PASS = 1
    CRASH = 2  # crash or timeout


_LABEL_OF: dict[str, Label] = {Outcome.PASS: Label.PASS, Outcome.INVALID: Label.INVALID,
             Outcome.CRASH: Label.CRASH, Outcome.TIMEOUT: Label.CRASH}


def label_of(outcome: Any) -> Optional[Label]:
    """The training label of an executed run's outcome, or None when the run
    says nothing about validity (skipped, oom, unsupported, ...)."""
    return _LABEL_OF.get(str(getattr(outcome, "value", outcome)))


def is_valid(label: int) -> bool:
    """The binary view: every label but INVALID got past validation."""
    return int(label) != Label.INVALID


#: ``train(spec, inputs, labels) -> model | None``; may raise TooFewExamples
Trainer = Callable[[ApiSpec, list, list], Any]


class OnlineLearner:
    """Collects labelled runs of one API and (re)trains a model from them.

    Training starts once ``warmup`` runs are labelled and both the valid and
    the invalid side have at least ``min_per_class`` examples; afterwards it
    retrains when the labelled data reaches ``max(n + retrain_every,
    ceil(n * retrain_factor))`` (additive for campaigns, geometric for the
    hook). When the trainer declines (TooFewExamples) or a class is short, it
    tries again after ``retry_after`` more labels. A trainer error keeps the
    previous model and is counted in :meth:`info` (``last_error``)."""

    def __init__(self, spec: Optional[ApiSpec], train: Trainer, *, warmup: int = 60, retrain_every: int = 50,
                 retrain_factor: float = 1.0, retry_after: Optional[int] = None,
                 min_per_class: int = 5):
        self.spec = spec
        self.train = train
        self.warmup = int(warmup)
        self.retrain_every = max(1, int(retrain_every))
        self.retrain_factor = float(retrain_factor)
        self.retry_after = max(1, int(retry_after if retry_after is not None else retrain_every))
        self.min_per_class = int(min_per_class)
        self.inputs: list[AbstractInput] = []
        self.labels: list[int] = []
        self.counts = {lab.name.lower(): 0 for lab in Label}
        self.model: Any = None
        self.next_train_at = self.warmup
        self.trainings = 0
        self.trained_at: list[int] = []
        self.train_errors = 0
        self.last_error: Optional[str] = None

    # -- data
    def add(self, ai: AbstractInput, outcome: Any) -> Optional[Label]:
        """Record one executed run (no training); returns its label."""
        y = label_of(outcome)
        if y is None:
            return None
        self.inputs.append(ai)
        self.labels.append(int(y))
        self.counts[y.name.lower()] += 1
        return y

    def observe(self, ai: AbstractInput, outcome: Any) -> bool:
        """Record one run and train when due; True when a new model was made."""
        if self.add(ai, outcome) is None:
            return False
        return self.maybe_train()

    @property
    def n_invalid(self) -> int:
        return self.counts["invalid"]

    @property
    def n_valid(self) -> int:
        return len(self.labels) - self.counts["invalid"]

    # -- training
    def maybe_train(self) -> bool:
        n = len(self.labels)
        if n < self.next_train_at:
            return False
        if min(self.n_valid, self.n_invalid) < self.min_per_class:
            self.next_train_at = n + self.retry_after
            return False
        return self.train_now()

    def train_now(self) -> bool:
        from .classify import TooFewExamples
        n = len(self.labels)
        try:
            if self.spec is None:  # the hook sets it once it knows the API
                raise RuntimeError("no spec to train with yet")
            model = self.train(self.spec, list(self.inputs), list(self.labels))
        except TooFewExamples:
            self.next_train_at = n + self.retry_after
            return False
        except Exception as e:  # keep the previous model (or none), but say so
            self.train_errors += 1
            self.last_error = f"{type(e).__name__}: {e}"
            self.next_train_at = n + self.retry_after
            return False
        self.next_train_at = max(n + self.retrain_every, int(math.ceil(n * self.retrain_factor)))
        self.trainings += 1
        self.trained_at.append(n)
        if model is None:
            return False
        self.model = model
        return True

    def info(self) -> dict[str, Any]:
        return {"labelled": len(self.labels), "valid": self.n_valid, "invalid": self.n_invalid,
                "crash": self.counts["crash"], "trainings": self.trainings,
                "trained_at": list(self.trained_at), "train_errors": self.train_errors,
                "last_error": self.last_error}


def labelled(pairs: Sequence[tuple[AbstractInput, Any]]) -> tuple[list[AbstractInput], list[int]]:
    """(inputs, labels) of the (input, outcome) pairs that get a label."""
    xs, ys = [], []
    for ai, outcome in pairs:
        y = label_of(outcome)
        if y is not None:
            xs.append(ai)
            ys.append(int(y))
    return xs, ys
