"""ValidityModel: feature schema + trained classifier + decision threshold.

On disk a model is two files sharing a prefix ``<dir>/<safe api name>``:

- ``<prefix>.model.txt`` (LightGBM text model) or ``<prefix>.model.pkl``
  (sklearn kinds), written by the kind;
- ``<prefix>.json``, the sidecar: format tag and version, kind, model file
  name and its SHA-256, the classes the model tells apart, threshold,
  training counts, metrics, parameters and the feature schema (which embeds
  the API spec the features were built from).

Classes follow :mod:`acetest_ml.learner`: invalid (0), pass (1) and crash
(2, crash or timeout). A model trained on runs with crashes keeps them as a
class of their own (LightGBM multiclass); the score is still the probability
that an input is not invalid, and :meth:`ValidityModel.crash_batch` gives the
probability that it crashes or hangs. Format version 1 sidecars (two-class
models) load as two-class models.

Scoring takes AbstractInputs only, so the same object serves campaigns and the
upstream ACETest hook.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np

from ..features import FeatureSchema, SchemaMismatchError
from ..model import AbstractInput, ApiSpec, safe_name
from .base import ClassifierKind, ModelFileError
from .kinds import get_kind
from .metrics import classification_metrics

SIDECAR_FORMAT = "acetest-ml-validity-model"
SIDECAR_VERSION = 2
#: versions this code reads (1: two-class models, no "classes" key)
READABLE_VERSIONS = (1, 2)
N_LABELS = 3  # invalid, pass, crash

Threshold = Union[float, str]
#: threshold policies picked on out-of-fold scores: "auto" maximises balanced
#: accuracy; "precision" maximises the precision of the valid class while
#: keeping at least PRECISION_MIN_RECALL of the valid examples
THRESHOLD_POLICIES = ("auto", "precision")
PRECISION_MIN_RECALL = 0.5


class TooFewExamples(Exception):
    """Not enough labelled examples of one class to train (a normal state
    early in a campaign, not a user error)."""

    def __init__(self, api: str, n_valid: int, n_invalid: int, min_per_class: int):
        self.api = api
        self.n_valid = n_valid
        self.n_invalid = n_invalid
        self.min_per_class = min_per_class
        super().__init__(f"{api}: too few examples to train ({n_valid} valid, {n_invalid} invalid; "
                         f"need {min_per_class} of each)")



def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _split_prefix(path: Union[str, Path]) -> Path:
    s = str(path)
    for suf in (".json", ".model.txt", ".model.pkl"):
        if s.endswith(suf):
            return Path(s[: -len(suf)])
    return Path(s)


class ValidityModel:
    def __init__(self, schema: FeatureSchema, classifier: ClassifierKind, threshold: float,
                 counts: Optional[dict] = None, metrics: Optional[dict] = None,
                 params: Optional[dict] = None, classes: Sequence[int] = (0, 1)):
        self.schema = schema
        self.classifier = classifier
        #: the label (learner.Label value) of each of the classifier's classes
        self.classes = [int(c) for c in classes]
        self.threshold = float(threshold)
        self.counts = dict(counts or {})
        self.metrics = dict(metrics or {})
        self.params = dict(params or {})

    @property
    def api(self) -> str:
        return self.schema.api

    @property
    def kind(self) -> str:
        return self.classifier.name

    @property
    def has_crash_class(self) -> bool:
        return 2 in self.classes

    # ------------------------------------------------------------------ scoring
    def proba_matrix(self, X: np.ndarray) -> np.ndarray:
        """(n, 3) probabilities of invalid, pass, crash for feature rows."""
        return _expand(self.classifier.predict_proba(X), self.classes)

    def score_matrix(self, X: np.ndarray) -> np.ndarray:
        return 1.0 - self.proba_matrix(X)[:, 0]

    def predict_batch(self, inputs: Sequence[AbstractInput]) -> np.ndarray:
        """(len(inputs), 3) probabilities of invalid, pass and crash/timeout."""
        if len(inputs) == 0:
            return np.empty((0, N_LABELS), dtype=np.float64)
        return self.proba_matrix(self.schema.matrix(inputs))

    def score_batch(self, inputs: Sequence[AbstractInput]) -> np.ndarray:
        """Probability that each input is not invalid (it passes, or gets past
        validation and crashes or hangs), float64 (len(inputs),)."""
        return 1.0 - self.predict_batch(inputs)[:, 0]

    def crash_batch(self, inputs: Sequence[AbstractInput]) -> np.ndarray:
        """Probability that each input crashes or times out (0 without a crash class)."""
        return self.predict_batch(inputs)[:, 2]

    def accept_mask(self, inputs: Sequence[AbstractInput],
                    threshold: Optional[float] = None) -> np.ndarray:
        """Boolean mask of inputs predicted valid (score >= threshold)."""
        t = self.threshold if threshold is None else float(threshold)
        return self.score_batch(inputs) >= t

    def evaluate(self, inputs: Sequence[AbstractInput], labels: Sequence[Any]) -> dict:
        """classification_metrics of this model on labelled inputs (valid =
        not invalid), with the crash class's own figures under ``crash``."""
        y = _labels(labels)
        proba = self.predict_batch(inputs)
        m = classification_metrics(y != 0, 1.0 - proba[:, 0], self.threshold)
        m["crash"] = crash_metrics(y, proba)
        return m

    # ------------------------------------------------------------------ persistence
    def save(self, directory: Union[str, Path]) -> Path:
        """Write ``<directory>/<safe api>.json`` and its model file; returns
        the sidecar path."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        return self.save_prefix(d / safe_name(self.api))

    def save_prefix(self, prefix: Union[str, Path]) -> Path:
        prefix = _split_prefix(prefix)
        prefix.parent.mkdir(parents=True, exist_ok=True)
        model_path = self.classifier.save(prefix)
        side = Path(str(prefix) + ".json")
        doc = {
            "format": SIDECAR_FORMAT,
            "format_version": SIDECAR_VERSION,
            "api": self.api,
            "kind": self.kind,
            "model_file": model_path.name,
            "model_sha256": _sha256(model_path),
            "classes": self.classes,
            "threshold": self.threshold,
            "counts": self.counts,
            "metrics": self.metrics,
            "params": self.params,
            "schema": self.schema.to_json(),
        }
        tmp = side.with_name(side.name + ".tmp")
        tmp.write_text(json.dumps(doc, indent=1, sort_keys=False, default=_json_default))
        tmp.replace(side)
        return side

    @classmethod
    def load(cls, path: Union[str, Path], spec: Optional[ApiSpec] = None) -> "ValidityModel":
        """Load from the sidecar, the model file or their common prefix. With
        ``spec``, refuse the model unless its schema matches the features the
        spec gives now. Every problem raises a UserError naming the file."""
        prefix = _split_prefix(path)
        side = Path(str(prefix) + ".json")
        if not side.is_file():
            raise ModelFileError(f"{side}: model sidecar not found")
        try:
            doc = json.loads(side.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ModelFileError(f"{side}: not valid JSON ({e})") from None
        if not isinstance(doc, dict) or doc.get("format") != SIDECAR_FORMAT:
            raise ModelFileError(f"{side}: not an acetest-ml model sidecar")
        version = doc.get("format_version")
        if version not in READABLE_VERSIONS:
            raise ModelFileError(f"{side}: sidecar format version {version!r} is not one this "
                                 f"acetest-ml reads ({', '.join(map(str, READABLE_VERSIONS))}); retrain the model")
        classes = doc.get("classes", [0, 1]) if version >= 2 else [0, 1]
        if (not isinstance(classes, list) or len(classes) < 2 or classes[0] != 0
                or sorted(set(classes)) != classes or not set(classes) <= {0, 1, 2}):
            raise ModelFileError(f"{side}: malformed classes {classes!r}")
        try:
            kind_cls = get_kind(doc["kind"])
            model_file = prefix.parent / str(doc["model_file"])
            expected_sha = str(doc["model_sha256"])
            threshold = float(doc["threshold"])
            schema_doc = doc["schema"]
        except KeyError as e:
            msg = e.args[0] if e.args and " " in str(e.args[0]) else f"missing key {e}"
            raise ModelFileError(f"{side}: {msg}") from None
        except (TypeError, ValueError) as e:
            raise ModelFileError(f"{side}: malformed sidecar ({e})") from None
        if not 0.0 <= threshold <= 1.0:
            raise ModelFileError(f"{side}: threshold {threshold} is not in [0, 1]")
        if model_file.name != str(prefix.name) + kind_cls.suffix:
            raise ModelFileError(f"{side}: model file {model_file.name!r} does not match kind "
                                 f"{kind_cls.name!r}")
        if not model_file.is_file():
            raise ModelFileError(f"{model_file}: model file not found")
        if _sha256(model_file) != expected_sha:
            raise ModelFileError(f"{model_file}: corrupt model file (checksum differs from {side.name})")
        try:
            stored = FeatureSchema.from_json(schema_doc)
            if spec is not None:
                FeatureSchema.for_spec(spec).check_compatible(stored)
                if stored.spec is None:
                    stored = FeatureSchema.for_spec(spec)
        except SchemaMismatchError as e:
            raise SchemaMismatchError(f"{side}: {e}") from None
        if stored.spec is None:
            raise SchemaMismatchError(f"{side}: feature schema version {stored.version} cannot be "
                                      f"used by this version; retrain the model")
        if stored.api != doc.get("api"):
            raise ModelFileError(f"{side}: sidecar API {doc.get('api')!r} differs from its schema "
                                 f"({stored.api!r})")
        classifier = kind_cls.load(prefix)
        n_out = classifier.predict_proba(np.zeros((1, stored.width), dtype=np.float32)).shape[1]
        if n_out != len(classes):
            raise ModelFileError(f"{model_file}: model has {n_out} classes, its sidecar names {len(classes)}")
        return cls(stored, classifier, threshold, counts=doc.get("counts"),
                   metrics=doc.get("metrics"), params=doc.get("params"), classes=classes)

    def __repr__(self) -> str:
        return (f"ValidityModel(api={self.api!r}, kind={self.kind!r}, threshold={self.threshold}, "
                f"classes={self.classes}, counts={self.counts})")


def _json_default(o: Any):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return repr(o)


def _labels(labels: Sequence[Any]) -> np.ndarray:
    """Labels as 0 invalid / 1 pass / 2 crash; booleans are the two-class view."""
    out = []
    for v in labels:
        i = int(v)
        if i not in (0, 1, 2):
            raise ValueError(f"label {v!r} is not 0 (invalid), 1 (pass) or 2 (crash)")
        out.append(i)
    return np.asarray(out, dtype=np.int64)


def _expand(proba: np.ndarray, classes: Sequence[int]) -> np.ndarray:
    out = np.zeros((len(proba), N_LABELS), dtype=np.float64)
    out[:, list(classes)] = proba
    return out


def _fit(kind_cls, X: np.ndarray, y: np.ndarray, params: dict):
    """A classifier trained on the labels present in y -> (classifier, classes)."""
    classes = sorted({int(v) for v in y})
    index = {c: i for i, c in enumerate(classes)}
    return kind_cls().fit(X, np.asarray([index[int(v)] for v in y]), params), classes


def _fit_proba(kind_cls, Xtr, ytr, Xte, params) -> np.ndarray:
    clf, classes = _fit(kind_cls, Xtr, ytr, params)
    return _expand(clf.predict_proba(Xte), classes)


def crash_metrics(y: np.ndarray, proba: np.ndarray) -> Optional[dict]:
    """How well P(crash) ranks the crash/timeout runs (None without any)."""
    from .metrics import roc_auc
    is_crash = np.asarray(y) == 2
    n = int(is_crash.sum())
    if n == 0:
        return None
    top = np.argsort(-proba[:, 2], kind="mergesort")[:n]
    return {"n": n, "roc_auc": roc_auc(is_crash, proba[:, 2]),
            "recall_at_n": float(is_crash[top].mean())}


# --------------------------------------------------------------------------- training

def best_threshold(y: np.ndarray, p: np.ndarray) -> float:
    """Threshold maximising balanced accuracy on (y, p); among equally good
    thresholds the middle of the widest-scoring interval closest to 0.5."""
    y = np.asarray(y).astype(bool)
    p = np.asarray(p, dtype=np.float64)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return 0.5
    order = np.argsort(-p, kind="mergesort")
    ps, ys = p[order], y[order]
    # accept the top k (k = 0..n): threshold between ps[k-1] and ps[k]
    tp = np.concatenate(([0], np.cumsum(ys)))
    fp = np.concatenate(([0], np.cumsum(~ys)))
    ba = 0.5 * (tp / n_pos + (n_neg - fp) / n_neg)
    # only cut between distinct scores
    valid = np.ones(len(ba), dtype=bool)
    valid[1:-1] = ps[:-1] != ps[1:]
    ba = np.where(valid, ba, -1.0)
    best = ba.max()
    cands = []
    for k in np.flatnonzero(ba >= best - 1e-12):
        hi = 1.0 if k == 0 else ps[k - 1]
        lo = 0.0 if k == len(ps) else ps[k]
        if k == 0:
            t = (1.0 + ps[0]) / 2 if ps[0] < 1.0 else 1.0
        elif k == len(ps):
            t = ps[-1] / 2
        else:
            t = (hi + lo) / 2
        cands.append(float(t))
    return min(cands, key=lambda t: abs(t - 0.5))


def precise_threshold(y: np.ndarray, p: np.ndarray, min_recall: float = PRECISION_MIN_RECALL) -> float:
    """Threshold maximising the precision of the positive class on (y, p)
    among those that keep a recall of at least ``min_recall``; among equally
    precise ones the lowest (the most positives kept). A filter that may draw
    again cheaply loses little by discarding some valid inputs, and every
    invalid input it lets through is a wasted run."""
    y = np.asarray(y).astype(bool)
    p = np.asarray(p, dtype=np.float64)
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == len(y):
        return 0.5
    order = np.argsort(-p, kind="mergesort")
    ps, ys = p[order], y[order]
    tp = np.cumsum(ys)
    k = np.arange(1, len(ps) + 1)
    # accept the top k; only cut between distinct scores
    cut = np.ones(len(ps), dtype=bool)
    cut[:-1] = ps[:-1] != ps[1:]
    ok = cut & (tp >= min_recall * n_pos)
    if not ok.any():
        return float(ps[-1] / 2)
    prec = np.where(ok, tp / k, -1.0)
    best = prec.max()
    i = int(np.flatnonzero(prec >= best - 1e-12)[-1])  # the largest such k
    lo = ps[i + 1] if i + 1 < len(ps) else 0.0
    return float((ps[i] + lo) / 2)


def _oof_proba(kind_cls, X: np.ndarray, y: np.ndarray, keys: list[str], params: dict,
               folds: int, seed: int) -> np.ndarray | None:
    """Out-of-fold (n, 3) class probabilities for every example (``folds``
    folds; identical inputs stay in one fold). None when a fold's training
    part lacks the valid or the invalid side."""
    rng = np.random.RandomState(seed)
    groups: dict[str, list[int]] = {}
    for i, k in enumerate(keys):
        groups.setdefault(k, []).append(i)
    fold_of = np.empty(len(y), dtype=np.int64)
    for j, gi in enumerate(rng.permutation(len(groups))):
        fold_of[list(groups.values())[gi]] = j % folds
    out = np.zeros((len(y), N_LABELS), dtype=np.float64)
    for f in range(folds):
        te = fold_of == f
        if not te.any():
            continue
        tr = ~te
        if len(np.unique(y[tr] != 0)) < 2:
            return None
        out[te] = _fit_proba(kind_cls, X[tr], y[tr], X[te], params)
    return out


def _split(keys: list[str], y: np.ndarray, fraction: float, seed: int):
    """Train/validation index split that keeps identical inputs on one side
    and both classes on both sides; None when that is impossible."""
    rng = np.random.RandomState(seed)
    n = len(y)
    groups: dict[str, list[int]] = {}
    for i, k in enumerate(keys):
        groups.setdefault(k, []).append(i)
    glist = list(groups.values())
    perm = rng.permutation(len(glist))
    target = max(1, int(round(fraction * n)))
    val: list[int] = []
    for gi in perm:
        if len(val) >= target:
            break
        val.extend(glist[gi])
    val_idx = np.array(sorted(val), dtype=np.int64)
    mask = np.zeros(n, dtype=bool)
    mask[val_idx] = True
    tr_idx = np.flatnonzero(~mask)
    for part in (val_idx, tr_idx):
        if len(np.unique(y[part] != 0)) < 2:
            return None
    return tr_idx, val_idx


def train_model(spec: ApiSpec, inputs: Sequence[AbstractInput], labels: Sequence[Any],
                kind: str = "lightgbm", params: Optional[Mapping[str, Any]] = None,
                threshold: Threshold = 0.5, min_per_class: int = 10, *,
                validation_fraction: float = 0.2, seed: int = 0) -> ValidityModel:
    """Train a ValidityModel for ``spec`` on labelled inputs (labels 0
    invalid, 1 pass, 2 crash/timeout as :func:`acetest_ml.learner.label_of`
    gives them; booleans are the two-class view). Crash runs, when present,
    are a class of their own. A held-out share (``validation_fraction``, split
    so identical inputs stay together) measures the model and, with
    ``threshold="auto"``, picks the threshold maximising balanced accuracy of
    valid (not invalid) against invalid; the final classifier is then refitted
    on all examples. Raises TooFewExamples when the valid or the invalid side
    has fewer than ``min_per_class`` examples."""
    if len(inputs) != len(labels):
        raise ValueError(f"{len(inputs)} inputs but {len(labels)} labels")
    y = _labels(labels)
    valid = y != 0
    n_valid = int(valid.sum())
    n_invalid = int(len(y) - n_valid)
    if n_valid < min_per_class or n_invalid < min_per_class:
        raise TooFewExamples(spec.name, n_valid, n_invalid, min_per_class)
    auto = isinstance(threshold, str)
    if auto and threshold not in THRESHOLD_POLICIES:
        raise ValueError(f"threshold must be a number in [0, 1] or one of {', '.join(THRESHOLD_POLICIES)}, "
                         f"not {threshold!r}")
    if not auto and not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"threshold {threshold} is not in [0, 1]")
    kind_cls = get_kind(kind)
    params = dict(params or {})
    schema = FeatureSchema.for_spec(spec)
    X = schema.matrix(inputs)
    keys = [ai.key() for ai in inputs]

    metrics: dict = {"validation": None}
    thr = 0.5 if auto else float(threshold)
    split = None
    if validation_fraction and validation_fraction > 0:
        split = _split(keys, y, validation_fraction, seed)
    oof = _oof_proba(kind_cls, X, y, keys, params, 5, seed) if auto else None
    if oof is not None:
        # "auto": the threshold maximising balanced accuracy on 5-fold
        # out-of-fold scores (every example held out once: steadier than one split)
        pick = precise_threshold if threshold == "precision" else best_threshold
        thr = pick(valid, 1.0 - oof[:, 0])
        metrics["validation"] = classification_metrics(valid, 1.0 - oof[:, 0], thr)
        metrics["validation"]["method"] = "5-fold out-of-fold"
        metrics["validation"]["crash"] = crash_metrics(y, oof)
    elif split is not None:
        tr, va = split
        p_va = _fit_proba(kind_cls, X[tr], y[tr], X[va], params)
        if auto:
            pick = precise_threshold if threshold == "precision" else best_threshold
            thr = pick(valid[va], 1.0 - p_va[:, 0])
        metrics["validation"] = classification_metrics(valid[va], 1.0 - p_va[:, 0], thr)
        metrics["validation"]["crash"] = crash_metrics(y[va], p_va)
    clf, classes = _fit(kind_cls, X, y, params)
    p_tr = _expand(clf.predict_proba(X), classes)
    metrics["train"] = classification_metrics(valid, 1.0 - p_tr[:, 0], thr)
    counts = {"n": int(len(y)), "valid": n_valid, "invalid": n_invalid,
              "pass": int((y == 1).sum()), "crash": int((y == 2).sum()),
              "distinct": len(set(keys))}
    stored_params = {"kind_params": params, "threshold": threshold,
                     "validation_fraction": validation_fraction, "seed": seed}
    return ValidityModel(schema, clf, thr, counts=counts, metrics=metrics, params=stored_params,
                         classes=classes)
