"""Per-API validity classifiers: kinds (LightGBM, sklearn), the saved
ValidityModel, training, metrics and the models.yaml registry."""
from .base import ClassifierKind, ModelFileError
from .kinds import KINDS, HistGBKind, LightGBMKind, RandomForestKind, get_kind, register_kind
from .metrics import classification_metrics, roc_auc
from .model import TooFewExamples, ValidityModel, best_threshold, safe_name, train_model
from .registry import ModelConfig, ModelRegistry

__all__ = [
    "ClassifierKind", "ModelFileError", "KINDS", "HistGBKind", "LightGBMKind", "RandomForestKind",
    "get_kind", "register_kind", "classification_metrics", "roc_auc", "TooFewExamples",
    "ValidityModel", "best_threshold", "safe_name", "train_model", "ModelConfig", "ModelRegistry",
]
