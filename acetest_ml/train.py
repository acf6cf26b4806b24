"""``acetest-ml train`` and ``acetest-ml eval``: datasets from a campaign's
store, one validity model per API.

Labels follow the one rule of :mod:`acetest_ml.learner` (the campaign's
online filter and the upstream hook use it too): invalid = 0, pass = 1,
crash and timeout = 2 (past validation: valid in the binary view).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from .errors import UserError
from .model import AbstractInput, ApiSpec
from .learner import is_valid, label_of
from .outcome import FAILURES
from .store import Store


@dataclass
class Dataset:
    api: str
    spec: ApiSpec
    inputs: list[AbstractInput] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    crash: int = 0
    timeout: int = 0

    @property
    def n_valid(self) -> int:
        return sum(1 for y in self.labels if is_valid(y))

    @property
    def n_invalid(self) -> int:
        return len(self.labels) - self.n_valid


def stored_spec(store: Store, api: str) -> ApiSpec:
    """The spec a campaign ran with (its features depend on it)."""
    info = store.api_statuses().get(api, {}).get("info", {})
    if "spec" in info:
        return ApiSpec.from_dict(info["spec"])
    from .spec import get_spec
    return get_spec(api)


def datasets(store: Store, apis: list[str] | None = None, *, seed: int | None = None
             ) -> dict[str, Dataset]:
    wanted = apis or store.apis()
    known = set(store.apis())
    out: dict[str, Dataset] = {}
    for api in wanted:
        if api not in known:
            raise UserError(f"API {api} has no runs in {store.out_dir}")
        ds = Dataset(api, stored_spec(store, api))
        for r in store.records(api, executed_only=True, seed=seed):
            y = label_of(r.outcome)
            if r.outcome in FAILURES:
                name = str(r.outcome)
                setattr(ds, name, getattr(ds, name) + 1)
            if y is None:
                continue
            ds.inputs.append(r.input)
            ds.labels.append(int(y))
        out[api] = ds
    return out


def train_all(runs_dir: str, models_yaml: str, apis: list[str] | None = None,
              out_dir: str | None = None, kind: str | None = None, min_per_class: int = 10
              ) -> dict[str, dict]:
    """Train and save a model per API into ``out_dir`` (default: the
    registry's models folder, created on demand); returns {api: report}."""
    from .classify import ModelRegistry, TooFewExamples, train_model
    registry = ModelRegistry.load(models_yaml, out_dir)
    target = str(registry.models_dir)
    os.makedirs(target, exist_ok=True)
    report: dict[str, dict] = {}
    with Store(runs_dir, create=False) as store:
        for api, ds in datasets(store, apis).items():
            row: dict[str, Any] = {"n": len(ds.labels), "valid": ds.n_valid, "invalid": ds.n_invalid,
                   "crash": ds.crash, "timeout": ds.timeout}
            conf = registry.config_for(api, kind)
            try:
                model = train_model(ds.spec, ds.inputs, ds.labels, kind=conf.kind,
                                    params=conf.params, threshold=conf.threshold,
                                    min_per_class=min_per_class)
            except TooFewExamples as e:
                row.update(status="not trained", reason=str(e))
                report[api] = row
                continue
            path = model.save(target)
            val = (model.metrics or {}).get("validation") or {}
            row.update(status="trained", model=str(path), kind=model.kind,
                       threshold=model.threshold, validation=val)
            report[api] = row
    return report


def evaluate_all(runs_dir: str, models_yaml: str, model_paths: list[str], apis: list[str] | None,
                 models_dir: str | None = None) -> dict[str, dict]:
    from .classify import ModelRegistry, ValidityModel
    report: dict[str, dict] = {}
    with Store(runs_dir, create=False) as store:
        by_api: dict[str, Any] = {}
        for p in model_paths:
            m = ValidityModel.load(p)
            by_api[m.api] = m
        wanted = apis or (list(by_api) if by_api else store.apis())
        registry = ModelRegistry.load(models_yaml, models_dir) if not by_api else None
        for api, ds in datasets(store, wanted).items():
            model = by_api.get(api)
            if model is None and registry is not None:
                model = registry.model_for(api, ds.spec)
            if model is None:
                report[api] = {"status": "no model"}
                continue
            if not ds.labels:
                report[api] = {"status": "no labelled runs"}
                continue
            m = model.evaluate(ds.inputs, ds.labels)
            m["status"] = "evaluated"
            report[api] = m
    return report


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def train_command(args) -> int:
    rep = train_all(args.runs, args.models, args.api or None, args.models_dir, args.kind)
    print(f"{'API':44} {'n':>5} {'valid':>5} {'inv':>5} {'crash':>5}  status")
    for api, r in rep.items():
        extra = ""
        if r["status"] == "trained":
            v = r.get("validation") or {}
            extra = f"{r['kind']} thr {r['threshold']:.2f} val bal.acc {_fmt(v.get('balanced_accuracy'))}"
        else:
            extra = r.get("reason", "")
        print(f"{api:44} {r['n']:>5} {r['valid']:>5} {r['invalid']:>5} {r['crash'] + r['timeout']:>5}"
              f"  {r['status']}: {extra}")
    trained = sum(1 for r in rep.values() if r["status"] == "trained")
    print(f"{trained} of {len(rep)} APIs trained")
    return 0


def eval_command(args) -> int:
    rep = evaluate_all(args.runs, args.models, args.model, args.api or None, args.models_dir)
    if args.json:
        print(json.dumps(rep, indent=1))
        return 0
    cols = ["accuracy", "balanced_accuracy", "precision", "recall", "f1", "roc_auc", "n"]
    print(f"{'API':44} " + " ".join(f"{c[:8]:>8}" for c in cols))
    for api, r in rep.items():
        if r.get("status") != "evaluated":
            print(f"{api:44} {r.get('status')}")
            continue
        print(f"{api:44} " + " ".join(f"{_fmt(r.get(c)):>8}" for c in cols))
    return 0
