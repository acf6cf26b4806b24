"""Classifier kinds: LightGBM (default), sklearn HistGradientBoosting and
RandomForest. Add a kind by subclassing ClassifierKind and decorating it with
:func:`register_kind`; models.yaml then names it."""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .base import ClassifierKind, ModelFileError

KINDS: dict[str, type[ClassifierKind]] = {}


def register_kind(cls: type[ClassifierKind]) -> type[ClassifierKind]:
    KINDS[cls.name] = cls
    return cls


def get_kind(name: str) -> type[ClassifierKind]:
    """The kind class registered as ``name``; KeyError with the known names."""
    try:
        return KINDS[name]
    except (KeyError, TypeError):
        raise KeyError(f"unknown classifier kind {name!r} (known: {', '.join(sorted(KINDS))})") \
            from None


def _is_plain(v: Any) -> bool:
    if isinstance(v, (bool, int, float, str)) or v is None:
        return True
    if isinstance(v, (list, tuple)):
        return all(isinstance(x, (bool, int, float, str)) for x in v)
    return False


# --------------------------------------------------------------------------- LightGBM

_LGB_ITER_ALIASES = ("num_iterations", "num_iteration", "n_iter", "num_tree", "num_trees",
                     "num_round", "num_rounds", "nrounds", "num_boost_round", "n_estimators",
                     "max_iter")


def _lgb_param_names() -> set[str] | None:
    """Every parameter name and alias LightGBM knows, or None if this
    LightGBM does not expose the table."""
    try:
        from lightgbm.basic import _ConfigAliases
        table = _ConfigAliases._get_all_param_aliases()
    except Exception:  # pragma: no cover - depends on LightGBM internals
        return None
    names: set[str] = set()
    for k, aliases in table.items():
        names.add(k)
        names.update(aliases)
    return names


@register_kind
class LightGBMKind(ClassifierKind):
    """LightGBM gradient-boosted trees, saved as LightGBM's text model."""

    name = "lightgbm"
    suffix = ".model.txt"
    #: always set so training is reproducible and stays on one core
    FIXED = {"objective": "binary", "verbose": -1, "deterministic": True, "force_row_wise": True}

    def __init__(self) -> None:
        super().__init__()
        self.booster = None

    @classmethod
    def default_params(cls) -> dict:
        return {"num_iterations": 200, "learning_rate": 0.05, "num_leaves": 31,
                "min_data_in_leaf": 5, "feature_fraction": 0.9, "seed": 0, "num_threads": 1}

    @classmethod
    def check_params(cls, params: Mapping[str, Any]) -> None:
        known = _lgb_param_names()
        for k, v in params.items():
            if not isinstance(k, str):
                raise ValueError(f"parameter name {k!r} is not a string")
            if known is not None and k not in known:
                raise ValueError(f"unknown LightGBM parameter {k!r}")
            if not _is_plain(v):
                raise ValueError(f"parameter {k!r} has unsupported value {v!r}")
        if params:
            # let LightGBM parse the values (types, ranges) on a tiny data set
            import lightgbm as lgb
            p = cls._train_params(params)[0]
            X = np.arange(20, dtype=np.float64).reshape(10, 2)
            y = np.arange(10) % 2
            try:
                lgb.Booster(params=p, train_set=lgb.Dataset(X, y, params={"verbose": -1}))
            except lgb.basic.LightGBMError as e:
                raise ValueError(str(e).strip().splitlines()[0]) from None

    @classmethod
    def _train_params(cls, params: Mapping[str, Any]) -> tuple[dict, int]:
        p = {**cls.default_params(), **dict(params), **cls.FIXED}
        rounds = 100
        for a in _LGB_ITER_ALIASES:
            if a in p:
                rounds = int(p.pop(a))
        return p, rounds

    def fit(self, X, y, params=None):
        import lightgbm as lgb
        p, rounds = self._train_params(params or {})
        self.params = dict(params or {})
        k = int(np.max(y)) + 1 if len(y) else 2
        if k > 2:
            p.update(objective="multiclass", num_class=k)
        ds = lgb.Dataset(np.asarray(X, dtype=np.float32), label=np.asarray(y, dtype=np.float64),
                         params={"verbose": -1}, free_raw_data=True)
        self.booster = lgb.train(p, ds, num_boost_round=rounds)
        return self

    def predict_proba(self, X):
        if self.booster is None:
            raise RuntimeError("model is not trained")
        X = np.asarray(X, dtype=np.float32)
        k = max(2, int(self.booster.num_model_per_iteration()))
        if len(X) == 0:
            return np.empty((0, k), dtype=np.float64)
        out = np.asarray(self.booster.predict(X, num_threads=1), dtype=np.float64)
        if out.ndim == 1:  # binary: P(class 1)
            return np.column_stack([1.0 - out, out])
        return out

    def save(self, path_prefix):
        path = self.model_path(path_prefix)
        self.booster.save_model(str(path))
        return path

    @classmethod
    def load(cls, path_prefix):
        import lightgbm as lgb
        path = Path(str(path_prefix) + cls.suffix)
        if not path.is_file():
            raise ModelFileError(f"{path}: model file not found")
        try:
            booster = lgb.Booster(model_file=str(path))
        except Exception as e:  # LightGBMError, UnicodeDecodeError, ...
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise ModelFileError(f"{path}: not a readable LightGBM model ({first})") from None
        k = cls()
        k.booster = booster
        return k


# --------------------------------------------------------------------------- scikit-learn

_PICKLE_FORMAT = "acetest-ml-sklearn-1"


class _SklearnKind(ClassifierKind):
    suffix = ".model.pkl"

    def __init__(self) -> None:
        super().__init__()
        self.estimator = None
        #: columns used by the estimator (all-NaN training columns are dropped:
        #: they carry no information and some sklearn versions reject them)
        self.keep: np.ndarray | None = None

    @classmethod
    def _estimator_cls(cls):
        raise NotImplementedError

    def _cols(self, X: np.ndarray) -> np.ndarray:
        return X if self.keep is None else X[:, self.keep]

    @classmethod
    def check_params(cls, params):
        est = cls._estimator_cls()()
        known = set(est.get_params())
        for k, v in params.items():
            if k not in known:
                raise ValueError(f"unknown {cls._estimator_cls().__name__} parameter {k!r}")
            if not (_is_plain(v) or isinstance(v, dict)):
                raise ValueError(f"parameter {k!r} has unsupported value {v!r}")
        est.set_params(**{**cls.default_params(), **params})
        validate = getattr(est, "_validate_params", None)
        if validate is not None:
            try:
                validate()
            except (ValueError, TypeError) as e:
                raise ValueError(str(e).splitlines()[0]) from None

    def fit(self, X, y, params=None):
        from threadpoolctl import threadpool_limits
        self.params = dict(params or {})
        est = self._estimator_cls()(**{**self.default_params(), **self.params})
        X = np.asarray(X, dtype=np.float32)
        all_nan = np.isnan(X).all(axis=0) if len(X) else np.zeros(X.shape[1], dtype=bool)
        self.keep = np.flatnonzero(~all_nan) if all_nan.any() else None
        with threadpool_limits(limits=1):
            est.fit(self._cols(X), np.asarray(y).astype(np.int64))
        self.estimator = est
        return self

    def predict_proba(self, X):
        if self.estimator is None:
            raise RuntimeError("model is not trained")
        X = np.asarray(X, dtype=np.float32)
        classes = [int(c) for c in self.estimator.classes_]
        out = np.zeros((len(X), max(2, max(classes) + 1)), dtype=np.float64)
        if len(X):
            proba = self.estimator.predict_proba(self._cols(X))
            out[:, classes] = proba
        return out

    def save(self, path_prefix):
        path = self.model_path(path_prefix)
        with open(path, "wb") as f:
            pickle.dump({"format": _PICKLE_FORMAT, "kind": self.name, "params": self.params,
                         "keep": self.keep, "estimator": self.estimator}, f, protocol=pickle.HIGHEST_PROTOCOL)
        return path

    @classmethod
    def load(cls, path_prefix):
        path = Path(str(path_prefix) + cls.suffix)
        if not path.is_file():
            raise ModelFileError(f"{path}: model file not found")
        try:
            with open(path, "rb") as f:
                obj = pickle.load(f)
        except Exception as e:
            raise ModelFileError(f"{path}: not a readable model pickle ({type(e).__name__})") \
                from None
        if not isinstance(obj, dict) or obj.get("format") != _PICKLE_FORMAT:
            raise ModelFileError(f"{path}: not an acetest-ml model pickle")
        if obj.get("kind") != cls.name or not isinstance(obj.get("estimator"),
                                                         cls._estimator_cls()):
            raise ModelFileError(f"{path}: holds a {obj.get('kind')!r} model, expected {cls.name!r}")
        k = cls()
        k.estimator = obj["estimator"]
        k.params = dict(obj.get("params") or {})
        k.keep = obj.get("keep")
        return k


@register_kind
class HistGBKind(_SklearnKind):
    """sklearn HistGradientBoostingClassifier (handles NaN natively)."""

    name = "hist_gb"

    @classmethod
    def _estimator_cls(cls):
        from sklearn.ensemble import HistGradientBoostingClassifier
        return HistGradientBoostingClassifier

    @classmethod
    def default_params(cls):
        return {"max_iter": 200, "learning_rate": 0.1, "max_leaf_nodes": 31,
                "min_samples_leaf": 5, "early_stopping": False, "random_state": 0}


@register_kind
class RandomForestKind(_SklearnKind):
    """sklearn RandomForestClassifier (NaN supported since sklearn 1.4)."""

    name = "random_forest"

    @classmethod
    def _estimator_cls(cls):
        from sklearn.ensemble import RandomForestClassifier
        return RandomForestClassifier

    @classmethod
    def default_params(cls):
        return {"n_estimators": 200, "min_samples_leaf": 1, "max_features": "sqrt",
                "n_jobs": 1, "random_state": 0}
