"""models.yaml: which classifier kind, parameters and threshold each API
uses, and where its model lives.

    default:                 # applies to every API
      kind: lightgbm
      threshold: 0.5         # a number in [0, 1] or "auto"
      params: {}             # extra parameters for the default kind
    kind_params:             # per-kind parameter sets (so swapping `kind`
      lightgbm: {...}        # is a one-line change)
      hist_gb: {...}
    models_dir: models       # relative to this YAML file
    apis:
      tf.raw_ops.Conv2D:
        kind: hist_gb        # any of these keys is optional
        threshold: 0.6
        params: {max_iter: 300}
        model: models/conv2d.json   # relative to this YAML file

Effective parameters of an API = the kind's built-in defaults, then
``kind_params[kind]``, then ``default.params`` (only when the API uses the
default kind), then the API's own ``params``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import yaml

from ..errors import ConfigError
from ..settings import DEFAULT_MODELS, DEFAULT_MODELS_DIR
from ..model import AbstractInput, ApiSpec
from .base import ClassifierKind, ModelFileError
from .kinds import KINDS, get_kind
from .model import THRESHOLD_POLICIES, ValidityModel, safe_name, train_model

_TOP_KEYS = {"default", "kind_params", "models_dir", "apis"}
_DEFAULT_KEYS = {"kind", "threshold", "params"}
_API_KEYS = {"kind", "threshold", "params", "model"}


@dataclass
class ModelConfig:
    """Effective configuration of one API."""

    api: str
    kind: str
    threshold: Union[float, str]
    params: dict = field(default_factory=dict)
    model_path: Optional[Path] = None  # sidecar path

    @property
    def kind_cls(self) -> type[ClassifierKind]:
        return get_kind(self.kind)


class ModelRegistry:
    def __init__(self, default: ModelConfig, kind_params: dict[str, dict], models_dir: Path,
                 apis: dict[str, dict], source: Optional[Path] = None):
        self.default = default
        self.kind_params = kind_params
        self.models_dir = models_dir
        self.apis = apis
        self.source = source

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, path: Union[str, Path], models_dir: Union[str, Path, None] = None
             ) -> "ModelRegistry":
        """Read ``path``. ``models_dir`` overrides the file's ``models_dir``;
        the registry shipped in the package keeps its models in
        ``./models`` of the current folder (models never go into the
        installed package)."""
        reg = cls._load(Path(path))
        if models_dir is not None:
            reg.models_dir = Path(models_dir).absolute()
        elif _is_packaged(Path(path)):
            reg.models_dir = Path.cwd() / DEFAULT_MODELS_DIR
        return reg

    @classmethod
    def _load(cls, path: Path) -> "ModelRegistry":
        try:
            text = path.read_text()
        except OSError as e:
            raise ConfigError(f"{path}: cannot read ({e.strerror or e})") from None
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark is not None else ""
            problem = getattr(e, "problem", None) or str(e).splitlines()[0]
            raise ConfigError(f"{path}:{where}: invalid YAML ({problem})") from None
        return cls.from_dict(doc if doc is not None else {}, path)

    @classmethod
    def from_dict(cls, doc: Any, path: Union[str, Path, None] = None) -> "ModelRegistry":
        where = str(path) if path is not None else "<models config>"
        base_dir = Path(path).parent if path is not None else Path.cwd()

        def err(key: str, problem: str) -> ConfigError:
            return ConfigError(f"{where}: {key}: {problem}")

        if not isinstance(doc, dict):
            raise err("(top level)", f"expected a mapping, got {type(doc).__name__}")
        for k in doc:
            if k not in _TOP_KEYS:
                raise err(str(k), f"unknown key (expected one of {', '.join(sorted(_TOP_KEYS))})")

        kp_doc = doc.get("kind_params") or {}
        if not isinstance(kp_doc, dict):
            raise err("kind_params", "expected a mapping of kind -> parameters")
        kind_params: dict[str, dict] = {}
        for kname, p in kp_doc.items():
            _check_kind(err, f"kind_params.{kname}", kname)
            kind_params[kname] = _check_params(err, f"kind_params.{kname}", kname, p or {})

        d_doc = doc.get("default") if doc.get("default") is not None else {}
        if not isinstance(d_doc, dict):
            raise err("default", "expected a mapping")
        for k in d_doc:
            if k not in _DEFAULT_KEYS:
                raise err(f"default.{k}", f"unknown key (expected one of "
                                          f"{', '.join(sorted(_DEFAULT_KEYS))})")
        d_kind = d_doc.get("kind", "lightgbm")
        _check_kind(err, "default.kind", d_kind)
        d_thr = _check_threshold(err, "default.threshold", d_doc.get("threshold", 0.5))
        d_params_raw = d_doc.get("params") or {}
        if not isinstance(d_params_raw, dict):
            raise err("default.params", "expected a mapping")
        merged = {**kind_params.get(d_kind, {}), **d_params_raw}
        _check_params(err, "default.params", d_kind, merged)
        default = ModelConfig(api="*", kind=d_kind, threshold=d_thr, params=dict(d_params_raw))

        md = doc.get("models_dir", "models")
        if not isinstance(md, str) or not md:
            raise err("models_dir", "expected a non-empty path string")
        models_dir = (base_dir / md)

        a_doc = doc.get("apis") or {}
        if not isinstance(a_doc, dict):
            raise err("apis", "expected a mapping of API name -> settings")
        apis: dict[str, dict] = {}
        for api, ov in a_doc.items():
            key = f"apis.{api}"
            if not isinstance(api, str):
                raise err(key, "API name must be a string")
            ov = ov or {}
            if not isinstance(ov, dict):
                raise err(key, "expected a mapping")
            for k in ov:
                if k not in _API_KEYS:
                    raise err(f"{key}.{k}", f"unknown key (expected one of "
                                            f"{', '.join(sorted(_API_KEYS))})")
            entry: dict = {}
            if "kind" in ov:
                _check_kind(err, f"{key}.kind", ov["kind"])
                entry["kind"] = ov["kind"]
            if "threshold" in ov:
                entry["threshold"] = _check_threshold(err, f"{key}.threshold", ov["threshold"])
            if "params" in ov:
                if not isinstance(ov["params"], dict):
                    raise err(f"{key}.params", "expected a mapping")
                entry["params"] = dict(ov["params"])
            if "model" in ov:
                if not isinstance(ov["model"], str) or not ov["model"]:
                    raise err(f"{key}.model", "expected a path string")
                entry["model"] = base_dir / ov["model"]
            apis[api] = entry
        reg = cls(default, kind_params, models_dir, apis, Path(path) if path is not None else None)
        for api in apis:  # validate every effective parameter set now
            cfg = reg.config_for(api)
            _check_params(err, f"apis.{api}.params", cfg.kind, cfg.params)
        return reg

    # ------------------------------------------------------------------ queries
    def config_for(self, api: str, kind: Optional[str] = None) -> ModelConfig:
        """The effective configuration of ``api``; ``kind`` overrides the
        configured kind (``train --kind``), and the parameters are then that
        kind's own (its ``kind_params``, plus ``default.params`` / the API's
        ``params`` only when they were written for that kind)."""
        ov = self.apis.get(api, {})
        configured = ov.get("kind", self.default.kind)
        if kind is None:
            kind = configured
        elif kind not in KINDS:
            raise ConfigError(f"unknown classifier kind {kind!r} (known: {', '.join(sorted(KINDS))})")
        params = {**get_kind(kind).default_params(), **self.kind_params.get(kind, {})}
        if kind == self.default.kind:
            params.update(self.default.params)
        if kind == configured:
            params.update(ov.get("params", {}))
        model = ov.get("model") or (self.models_dir / f"{safe_name(api)}.json")
        return ModelConfig(api=api, kind=kind, threshold=ov.get("threshold", self.default.threshold),
                           params=params, model_path=Path(model))

    def new_classifier(self, api: str) -> ClassifierKind:
        return self.config_for(api).kind_cls()

    def model_for(self, api: str, spec: Optional[ApiSpec] = None) -> Optional[ValidityModel]:
        """The saved model of ``api`` or None when there is none. Raises a
        UserError when the file is unreadable, was built for other features,
        or was trained with another kind than the configuration names."""
        cfg = self.config_for(api)
        path = cfg.model_path
        if path is None or not path.is_file():
            return None
        m = ValidityModel.load(path, spec)
        if m.api != api:
            raise ModelFileError(f"{path}: holds a model of {m.api!r}, not {api!r}")
        if m.kind != cfg.kind:
            raise ModelFileError(f"{path}: trained with kind {m.kind!r} but the configuration "
                                 f"asks for {cfg.kind!r}; retrain the model")
        if not isinstance(cfg.threshold, str):
            m.threshold = float(cfg.threshold)  # the configured threshold wins over the trained one
        return m

    def train(self, spec: ApiSpec, inputs: Sequence[AbstractInput], labels: Sequence[Any], *,
              min_per_class: int = 10, save: bool = True, **kw) -> ValidityModel:
        """Train ``spec``'s model with its configured kind, params and
        threshold; with ``save``, write it where :meth:`model_for` looks."""
        cfg = self.config_for(spec.name)
        m = train_model(spec, inputs, labels, kind=cfg.kind, params=cfg.params,
                        threshold=cfg.threshold, min_per_class=min_per_class, **kw)
        if save:
            assert cfg.model_path is not None  # config_for always names one
            m.save_prefix(cfg.model_path)
        return m


def _is_packaged(path: Path) -> bool:
    try:
        return path.resolve() == Path(DEFAULT_MODELS).resolve()
    except OSError:
        return False


def _check_kind(err, key: str, kind: Any) -> None:
    if not isinstance(kind, str) or kind not in KINDS:
        raise err(key, f"unknown classifier kind {kind!r} (known: {', '.join(sorted(KINDS))})")


def _check_threshold(err, key: str, v: Any) -> Union[float, str]:
    if v in THRESHOLD_POLICIES:
        return str(v)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(float(v)) \
            or not 0.0 <= float(v) <= 1.0:
        raise err(key, f"expected a number in [0, 1], 'auto' or 'precision', got {v!r}")
    return float(v)


def _check_params(err, key: str, kind: str, params: Any) -> dict:
    if not isinstance(params, dict):
        raise err(key, "expected a mapping of parameter -> value")
    try:
        get_kind(kind).check_params(params)
    except ValueError as e:
        raise err(key, str(e)) from None
    return dict(params)
