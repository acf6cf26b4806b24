"""The one interface every classifier kind implements.

A kind wraps one learning library. Instances are created empty, trained with
:meth:`ClassifierKind.fit`, and persisted next to a JSON sidecar written by
:class:`acetest_ml.classify.model.ValidityModel`; the kind only owns its model
file (``<path_prefix><suffix>``). Labels are class indices 0..k-1 (k >= 2,
every class present in training), 0 always the invalid class; a two-class
model is 0 = invalid, 1 = valid. Feature matrices may contain NaN.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Mapping

import numpy as np

from ..errors import UserError


class ModelFileError(UserError):
    """A saved model file is missing, corrupt or of the wrong kind."""


class ClassifierKind(ABC):
    #: registry name used in models.yaml
    name: ClassVar[str]
    #: file name suffix of the saved model, appended to the path prefix
    suffix: ClassVar[str]

    def __init__(self) -> None:
        self.params: dict = {}

    # -- configuration -----------------------------------------------------
    @classmethod
    def default_params(cls) -> dict:
        """Parameters used when the configuration gives none."""
        return {}

    @classmethod
    def check_params(cls, params: Mapping[str, Any]) -> None:
        """Raise ValueError (one line, naming the parameter) if ``params`` are
        not acceptable for this kind. Called when configuration is loaded."""

    # -- training / scoring ------------------------------------------------
    @abstractmethod
    def fit(self, X: np.ndarray, y: np.ndarray, params: Mapping[str, Any] | None = None
            ) -> "ClassifierKind":
        """Train on X (n, d) float32 and y (n,) in {0..k-1}; returns self."""

    @abstractmethod
    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities for each row, float64 (n, k)."""

    def predict_valid(self, X: np.ndarray) -> np.ndarray:
        """Probability that each row is not of the invalid class 0, float64 (n,)."""
        return 1.0 - self.predict_proba(X)[:, 0]

    # -- persistence -------------------------------------------------------
    def model_path(self, path_prefix: str | Path) -> Path:
        return Path(str(path_prefix) + self.suffix)

    @abstractmethod
    def save(self, path_prefix: str | Path) -> Path:
        """Write the model file; returns its path."""

    @classmethod
    @abstractmethod
    def load(cls, path_prefix: str | Path) -> "ClassifierKind":
        """Read a model written by :meth:`save`; raises ModelFileError."""
