"""The benchmark protocol (DESIGN.md, "make bench").

For the APIs of ``benchmarks/apis.yaml``:
1. train arm: unfiltered campaign, seed A, N_train executions; train a model per API;
2. baseline arm: unfiltered, seed B, N_eval; its labels also score the classifiers;
3. filtered arm: seed B, N_eval, ``--ml-filter`` with the models of step 1;
4. online arm: seed B, N_eval, ``--ml-filter online`` (no prior training);
5. learned arm: seed B, N_eval, ``--learn-rules`` (no classifier);
6. learned+filter arm: seed B, N_eval, ``--learn-rules --ml-filter`` with the models of
   step 1 and, as prior rules, the rules learned offline from the training
   campaign (``work/train_rules.yaml``, as ``acetest-ml rules learn``): the
   arm starts from what the training runs taught, models and rules.
Each arm is a campaign folder under ``<out>/work``; a killed bench reruns
with ``--resume <out>`` and every campaign continues where it stopped.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from typing import Optional

import yaml

from ..campaign import CampaignConfig, run_campaign
from ..errors import ConfigError
from ..outcome import ApiStatus
from ..settings import DEFAULTS

ARMS = ("baseline", "filtered", "online", "learned", "learned_filter")
_FINISHED = (ApiStatus.SKIPPED, ApiStatus.DONE, ApiStatus.UNHEALTHY)


@dataclass
class BenchConfig:
    path: str
    acetest_apis: list[str]
    registry_apis: list[str]
    seed_train: int = 1
    seed_eval: int = 2
    budget_train: int = 300
    budget_eval: int = 200
    timeout: float = DEFAULTS["timeout"]
    jobs: int = DEFAULTS["jobs"]
    exploration: float = DEFAULTS["exploration"]
    rules: Optional[str] = None
    models: str = DEFAULTS["models"]
    min_per_class: int = 10
    quick: bool = False
    #: cheap candidates (CampaignConfig.cheap); bench --no-cheap measures the old scheme
    cheap: bool = True
    #: the filtered arms' filter policy (CampaignConfig.filter_policy)
    filter_policy: str = DEFAULTS["filter_policy"]
    #: evaluation arms to run (None: all); any other arm is summarized from
    #: what its folder holds already (nothing: reported as not run)
    arms: Optional[tuple] = None
    extra: dict = field(default_factory=dict)

    @property
    def apis(self) -> list[str]:
        return list(self.acetest_apis) + list(self.registry_apis)

    def constraints_by_api(self) -> dict[str, str]:
        return {a: "acetest" for a in self.acetest_apis}


def load_bench_config(path: str, quick: bool = False) -> BenchConfig:
    if not os.path.exists(path):
        raise ConfigError(f"{path}: benchmark list not found")
    try:
        with open(path) as f:
            doc = yaml.safe_load(f) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")

    def get(d, key, typ, default):
        v = d.get(key, default)
        if not isinstance(v, typ):
            raise ConfigError(f"{path}: key {key!r} must be {typ.__name__ if isinstance(typ, type) else typ}")
        return v

    seeds = get(doc, "seeds", dict, {})
    budget = get(doc, "budget", dict, {})
    acetest_apis = get(doc, "acetest_apis", list, [])
    registry_apis = get(doc, "registry_apis", list, [])
    cfg = BenchConfig(path=path, acetest_apis=acetest_apis, registry_apis=registry_apis,
                      seed_train=int(seeds.get("train", 1)), seed_eval=int(seeds.get("eval", 2)),
                      budget_train=int(budget.get("train", 300)), budget_eval=int(budget.get("eval", 200)),
                      timeout=doc.get("timeout", DEFAULTS["timeout"]),
                      jobs=doc.get("jobs", DEFAULTS["jobs"]),
                      exploration=doc.get("exploration", DEFAULTS["exploration"]),
                      rules=doc.get("rules"), models=doc.get("models", DEFAULTS["models"]),
                      min_per_class=int(doc.get("min_per_class", 10)),
                      filter_policy=doc.get("filter_policy", DEFAULTS["filter_policy"]))
    if quick:
        q = get(doc, "quick", dict, {})
        qapis = set(get(q, "apis", list, []))
        if not qapis:
            raise ConfigError(f"{path}: quick.apis must list the quick subset")
        unknown = qapis - set(cfg.apis)
        if unknown:
            raise ConfigError(f"{path}: quick.apis names {sorted(unknown)[0]!r}, which is not in the lists")
        cfg.acetest_apis = [a for a in cfg.acetest_apis if a in qapis]
        cfg.registry_apis = [a for a in cfg.registry_apis if a in qapis]
        qb = get(q, "budget", dict, {})
        cfg.budget_train = int(qb.get("train", 60))
        cfg.budget_eval = int(qb.get("eval", 40))
        cfg.quick = True
    if not cfg.apis:
        raise ConfigError(f"{path}: no APIs listed (acetest_apis / registry_apis)")
    # the campaign settings check every number the arms will use
    from ..settings import SettingError
    for budget in (cfg.budget_train, cfg.budget_eval):
        try:
            CampaignConfig(apis=cfg.apis, out=".", budget=budget, timeout=cfg.timeout,
                           jobs=cfg.jobs, exploration=cfg.exploration, filter_policy=cfg.filter_policy)
        except SettingError as e:
            raise ConfigError(f"{path}: {e}") from None
    base = os.path.dirname(os.path.abspath(path))
    if cfg.rules:
        if not os.path.isabs(cfg.rules) and not os.path.exists(cfg.rules):
            cfg.rules = os.path.join(base, cfg.rules)
    if "models" in doc and not os.path.isabs(cfg.models):
        cfg.models = os.path.join(base, cfg.models)
    return cfg


def _log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


#: evaluation arms take turns on chunks of this many APIs per worker, so every
#: arm meets the same load on a shared machine (exec/s compare as ratios)
CHUNK_PER_JOB = 4


def _campaign(cfg: BenchConfig, out: str, *, seed: int, budget: int, acetest_data: str,
              ml_filter: str | None = None, models: str | None = None, progress: bool = True,
              learn_rules: bool = False, prior_rules: Optional[str] = None,
              apis: Optional[list] = None) -> dict:
    resume = os.path.exists(os.path.join(out, "runs.sqlite"))
    done_marker = os.path.join(out, "summary.json")
    apis = list(cfg.apis if apis is None else apis)
    ccfg = CampaignConfig(apis=apis, out=out, budget=budget, seed=seed, constraints="registry",
                          acetest_data=acetest_data, rules=cfg.rules, timeout=cfg.timeout, jobs=cfg.jobs,
                          resume=resume, ml_filter=ml_filter, models=models or cfg.models,
                          exploration=cfg.exploration, constraints_by_api=cfg.constraints_by_api(),
                          learn_rules=learn_rules, prior_rules=prior_rules, cheap=cfg.cheap,
                          filter_policy=cfg.filter_policy if ml_filter else "score")
    if resume and os.path.exists(done_marker):
        with open(done_marker) as f:
            prev = json.load(f)
        # finished earlier: every API reached its budget or was skipped
        done = prev.get("apis", {})
        if all(a in done and (done[a].get("executed", 0) >= budget or done[a].get("status") in _FINISHED)
               for a in apis):
            return prev
    return run_campaign(ccfg, show_progress=progress)


def _recorded(cfg: BenchConfig, out: str, budget: int) -> dict:
    """The summary of what an arm's folder holds, without running anything
    (``{"apis": {}}`` when it holds nothing)."""
    if not os.path.exists(os.path.join(out, "runs.sqlite")):
        return {"apis": {}, "not_run": True}
    s = _summarize(cfg, out, budget)
    s["not_run"] = True
    return s


def _summarize(cfg: BenchConfig, out: str, budget: int, learn: bool = False) -> dict:
    """The summary of an arm's store over every API of the bench."""
    from ..store import Store
    from ..summary import summarize
    ccfg = CampaignConfig(apis=cfg.apis, out=out, budget=budget, seed=cfg.seed_eval, resume=True,
                          constraints_by_api=cfg.constraints_by_api(), learn_rules=learn)
    with Store(out) as st:
        return summarize(st, ccfg)


def _arm_summary(cfg: BenchConfig, out: str, budget: int, learn: bool) -> dict:
    """An arm's summary over every API once all its chunks ran (also its
    summary.json and, for learning arms, learned_rules.yaml)."""
    from ..summary import write_summary
    s = _summarize(cfg, out, budget, learn)
    write_summary(out, s)
    if learn:
        from ..learn import learned_from_summary, write_rules_yaml
        write_rules_yaml(os.path.join(out, "learned_rules.yaml"), learned_from_summary(s),
                         header=f"bench arm {os.path.basename(out)}, seed {cfg.seed_eval}, budget {budget}")
    return s


def registry_copy(models: str, work: str, models_dir: Optional[str] = None) -> str:
    """``work/models.yaml``: a copy of the model registry ``models`` without its
    per-API entries, whose models go to ``models_dir`` (relative to the copy;
    default: the absolute ``work/models``)."""
    with open(models) as f:
        doc = yaml.safe_load(f) or {}
    doc["models_dir"] = models_dir if models_dir is not None else os.path.abspath(os.path.join(work, "models"))
    doc["apis"] = {}
    path = os.path.join(work, "models.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(doc, f, sort_keys=False)
    return path


def _models_yaml(cfg: BenchConfig, work: str) -> str:
    """A copy of the model registry whose models_dir is the bench's own."""
    return registry_copy(cfg.models, work)


def run_bench(cfg: BenchConfig, out: str, acetest_data: str, progress: bool = True) -> dict:
    from ..train import train_all, evaluate_all
    from .report import build_results, write_outputs
    work = os.path.join(out, "work")
    os.makedirs(work, exist_ok=True)
    t_start = time.time()
    timings: dict[str, float] = {}
    _log(f"{len(cfg.apis)} APIs ({len(cfg.acetest_apis)} on ACETest constraints, "
         f"{len(cfg.registry_apis)} on registry constraints); train {cfg.budget_train}, "
         f"eval {cfg.budget_eval} executions per API and arm; output {out}")

    t = time.time()
    _log("arm 1/6: training campaign (unfiltered, seed A)")
    train_sum = _campaign(cfg, os.path.join(work, "train"), seed=cfg.seed_train,
                          budget=cfg.budget_train, acetest_data=acetest_data, progress=progress)
    timings["train_campaign_s"] = time.time() - t

    t = time.time()
    models_yaml = _models_yaml(cfg, work)
    _log("training one model per API")
    train_rep = train_all(os.path.join(work, "train"), models_yaml,
                          [a for a, v in train_sum["apis"].items() if v.get("executed")],
                          os.path.join(work, "models"), min_per_class=cfg.min_per_class)
    timings["training_s"] = time.time() - t

    t = time.time()
    prior = os.path.join(work, "train_rules.yaml")
    if not os.path.exists(prior):
        _log("learning rules offline from the training campaign")
        learn_train_rules(os.path.join(work, "train"), prior, jobs=cfg.jobs)
    timings["rule_learning_s"] = time.time() - t

    arms: dict[str, dict] = {}
    plan = (("baseline", None, False), ("filtered", "offline", False), ("online", "online", False),
            ("learned", None, True), ("learned_filter", "offline", True))
    run = [p for p in plan if cfg.arms is None or p[0] in cfg.arms]
    running = {p[0] for p in run}
    for arm, _, _ in plan:
        if arm not in running:
            _log(f"{arm} not run (--arms): what {arm}/ holds")
    # the arms take turns, chunk by chunk of APIs: each meets the same load
    size = CHUNK_PER_JOB * max(1, cfg.jobs)
    chunks = [cfg.apis[i:i + size] for i in range(0, len(cfg.apis), size)]
    for c, chunk in enumerate(chunks, 1):
        for arm, filt, learn in run:
            t = time.time()
            _log(f"APIs {c}/{len(chunks)} ({len(chunk)}): {arm} campaign (seed B)")
            _campaign(cfg, os.path.join(work, arm), seed=cfg.seed_eval, budget=cfg.budget_eval,
                      acetest_data=acetest_data, ml_filter=filt, models=models_yaml,
                      progress=progress, learn_rules=learn,
                      prior_rules=prior if arm == "learned_filter" else None, apis=chunk)
            timings[f"{arm}_campaign_s"] = timings.get(f"{arm}_campaign_s", 0.0) + time.time() - t
    for arm, _, learn in plan:
        folder = os.path.join(work, arm)
        if arm in running:
            arms[arm] = _arm_summary(cfg, folder, cfg.budget_eval, learn)
        else:
            arms[arm] = _recorded(cfg, folder, budget=cfg.budget_eval)

    _log("scoring the classifiers on the baseline arm's labels")
    trained = [a for a, r in train_rep.items() if r.get("status") == "trained"]
    clf = evaluate_all(os.path.join(work, "baseline"), models_yaml, [], trained) if trained else {}
    timings["total_s"] = time.time() - t_start
    results = build_results(cfg, train_sum, train_rep, arms, clf, timings)
    write_outputs(results, out)
    _log(f"done in {timings['total_s']:.0f} s: {os.path.join(out, 'report.md')}")
    return results


def _learn_one(args: tuple) -> tuple:
    from ..learn import learn_store
    runs, api = args
    lr = learn_store(runs, [api]).get(api)
    return api, (lr.info()["rules"] if lr is not None else [])


def learn_train_rules(runs: str, path: str, jobs: int = 1) -> str:
    """Rules learned offline from the campaign folder ``runs`` (every API,
    ``jobs`` processes) -> the rules YAML ``path``."""
    from ..learn import write_rules_yaml
    from ..store import Store
    with Store(runs, create=False) as st:
        apis = sorted(a for a, v in st.api_statuses().items() if (v.get("info") or {}).get("spec"))
    work = [(runs, a) for a in apis]
    if jobs > 1 and len(work) > 1:
        import multiprocessing as mp
        with mp.get_context("spawn").Pool(jobs) as pool:
            learned = dict(pool.map(_learn_one, work, chunksize=1))
    else:
        learned = dict(map(_learn_one, work))
    return write_rules_yaml(path, learned, header=f"learned offline from {runs}")


def default_out_dir(root: str = "benchmarks/results") -> str:
    return os.path.join(root, time.strftime("%Y%m%d-%H%M%S"))
