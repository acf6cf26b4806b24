"""The campaign loop: sample -> (score / filter) -> execute -> store.

One ``ApiCampaign`` per API. Candidates come from a seeded Sampler in a fixed
order; each gets an index, and every candidate (executed or discarded) is
written to the store, so ``--resume`` replays the sampler up to the first
unrecorded index and goes on from there. The budget counts executed inputs.
Several APIs run at once on ``jobs`` threads, each with its own worker
process (the framework work happens in the workers; Z3 releases the GIL).
"""
from __future__ import annotations

import hashlib
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from .errors import UserError
from .model import ApiSpec
from .settings import CampaignConfig, SettingError  # noqa: F401  (re-exported)
from .outcome import FAILURES, ApiStatus, Decision, Outcome, Stage
from .store import Store

CRASH_OUTCOMES = FAILURES
#: an API's health (summary ``health``): ok, or why its figures are weak
HEALTH_OK = "ok"
HEALTH_FILTER_TOO_MUCH = "filter_too_much"   #: stopped at the candidate cap


def api_seed(seed: int, api: str) -> int:
    """The sampler seed of one API in a campaign: stable across runs."""
    h = hashlib.sha256(f"{seed}:{api}".encode()).digest()
    return int.from_bytes(h[:4], "little") & 0x7FFFFFFF


# --------------------------------------------------------------------------
# resolving an API to a spec and its constraint sets

def resolve(cfg: CampaignConfig, api: str):
    """-> (spec, problems, notes). Raises UserError when the API cannot run."""
    if cfg.constraints_by_api.get(api, cfg.constraints) == "acetest":
        from .spec.acetest_data import AcetestData
        data = _acetest_data(cfg.acetest_data)
        loaded = data.load(api)
        spec, problems = loaded.spec, loaded.problems
        notes: dict[str, Any] = {"constraints": "acetest",
                                 "skipped_files": [list(x) for x in loaded.skipped]}
    else:
        from .spec import get_spec
        from .solve.registry import RegistryProblem
        from .solve.rules import load_rules_file
        spec = get_spec(api, cfg.framework)
        rules = load_rules_file(cfg.rules).get(spec.name, []) if cfg.rules else []
        problems = [RegistryProblem(spec, rules, rules_source=cfg.rules or "rules")]
        notes = {"constraints": "registry", "rules": len(rules)}
    if spec.unsupported:
        raise UserError(f"{spec.name} is not supported: {spec.unsupported}")
    if not problems:
        raise UserError(f"{spec.name}: no satisfiable constraint set")
    return spec, problems, notes


_DATA_CACHE: dict[str, object] = {}
_DATA_LOCK = threading.Lock()


def _acetest_data(path: str):
    from .spec.acetest_data import AcetestData
    with _DATA_LOCK:
        d = _DATA_CACHE.get(path)
        if d is None:
            d = _DATA_CACHE[path] = AcetestData(path)
        return d


# --------------------------------------------------------------------------

@dataclass
class ApiResult:
    api: str
    status: str                 # an ApiStatus
    reason: Optional[str] = None
    summary: dict = field(default_factory=dict)


class ApiCampaign:
    def __init__(self, cfg: CampaignConfig, api: str, store: Store, executor_factory,
                 progress: Callable[[str, int, int], None] | None = None):
        self.cfg = cfg
        self.api = api
        self.store = store
        self.executor_factory = executor_factory
        self.progress = progress or (lambda api, done, total: None)

    def run(self) -> ApiResult:
        from .filter import explorable
        from .solve.sampler import NoSolutionError, Sampler
        cfg = self.cfg
        try:
            spec, problems, notes = resolve(cfg, self.api)
        except UserError as e:
            self.store.set_api_status(self.api, ApiStatus.SKIPPED, str(e))
            return ApiResult(self.api, ApiStatus.SKIPPED, str(e))
        name = spec.name
        notes["spec"] = spec.to_dict()  # training reads the spec the runs were made with
        seed = api_seed(cfg.seed, name)
        # ACETest's scheme: a few solver models per constraint set, reused with
        # fresh random fills (budget / sets / 2 each, at least 2)
        per_set = (max(2, cfg.budget // (2 * len(problems)))
                   if notes.get("constraints") == "acetest" else None)
        sampler = Sampler(problems, seed, models_per_set=per_set)
        start = self.store.next_index(name, seed)
        executed = self.store.count_executed(name, seed)
        prior = self.store.api_statuses().get(name, {}).get("info", {})
        elapsed_before = float(prior.get("elapsed", 0.0)) if cfg.resume else 0.0
        # replay the deterministic candidate stream up to what is recorded
        try:
            for _ in range(start):
                sampler.next()
        except NoSolutionError as e:
            self.store.set_api_status(name, ApiStatus.SKIPPED, f"{name}: {e}")
            return ApiResult(name, ApiStatus.SKIPPED, str(e))
        filt = self._make_filter(spec)
        # exploration runs so far (their share of executed runs is bounded)
        self.explored = self.store.count_decision(name, seed, Decision.EXPLORE)
        idx = start
        t0 = time.time()
        self.store.set_api_status(name, ApiStatus.RUNNING, None, {**notes, "elapsed": elapsed_before})
        self.progress(name, executed, cfg.budget)
        cap = cfg.candidate_cap
        status, reason, health = ApiStatus.DONE, None, HEALTH_OK
        executor = self.executor_factory(spec.framework)
        try:
            if cfg.time_budget is not None and hasattr(executor, "start"):
                # equal-time runs: the clock starts once the worker is up
                executor.start()
                t0 = time.time()
            while executed < cfg.budget:
                if cfg.time_budget is not None and time.time() - t0 >= cfg.time_budget:
                    reason = f"time budget reached ({cfg.time_budget:g}s)"
                    break
                if idx >= cap:
                    # nearly every candidate is discarded: the figures of this
                    # API are weak (Hypothesis calls this filter_too_much)
                    status, health = ApiStatus.UNHEALTHY, HEALTH_FILTER_TOO_MUCH
                    reason = (f"candidate cap reached: {cap} candidates for {executed} of "
                              f"{cfg.budget} executed runs ({HEALTH_FILTER_TOO_MUCH})")
                    break
                # batches only once a model scores them (warm-up runs one by one,
                # so the filter switches on as soon as it is trained)
                n = min(cfg.batch, cap - idx) if filt is not None and filt.active else 1
                try:
                    batch = [sampler.next() for _ in range(n)]
                except NoSolutionError as e:
                    status, reason = ApiStatus.SKIPPED, f"{name}: {e}"
                    break
                scores, decisions = self._decide(filt, batch)
                rows = []
                for ai, score, decision in zip(batch, scores, decisions):
                    if decision == Decision.CRASH:  # predicted crash: run it unless its bug is known
                        decision = filt.settle_crash(ai, score)
                    if decision in (Decision.REJECT, Decision.KNOWN):
                        # not worth a run by the model (predicted invalid, or a
                        # known crash): run it anyway while exploration runs
                        # are below their share of the executed budget
                        if (self.explored < cfg.exploration * (executed + 1) and executed < cfg.budget
                                and explorable(decision, score, filt.threshold, cfg.explore_band)):
                            decision = Decision.EXPLORE
                            self.explored += 1
                        elif decision == Decision.REJECT:
                            decision = Decision.DISCARD
                    if decision in (Decision.DISCARD, Decision.KNOWN) or executed >= cfg.budget:
                        if executed >= cfg.budget:
                            # generated beyond the budget: not recorded, so a
                            # resumed campaign regenerates it identically
                            break
                        rows.append((name, seed, idx, ai.dumps(), score, decision, None, None, None,
                                     None, None))
                        idx += 1
                        continue
                    if cfg.time_budget is not None and time.time() - t0 >= cfg.time_budget:
                        break  # not recorded: a resumed campaign regenerates it identically
                    res = self._execute(executor, spec, ai)
                    rows.append((name, seed, idx, ai.dumps(), score, decision, res.outcome,
                                 res.exc_type, res.message, res.signature, res.duration))
                    if res.outcome in CRASH_OUTCOMES:
                        from .triage import record_bug  # one bug folder per signature
                        record_bug(cfg.out, spec, ai, res, seed=seed, idx=idx, timeout=cfg.timeout,
                                   framework_version=getattr(executor, "worker_version", None))
                    if Outcome(res.outcome).executed:
                        executed += 1
                        if filt is not None:
                            filt.observe(ai, res.outcome, res.signature)
                    idx += 1
                    # each executed run is committed with the discards before it
                    self.store.add_many(rows)
                    rows = []
                    self.progress(name, executed, cfg.budget)
                self.store.add_many(rows)
        finally:
            info = {**notes, "elapsed": elapsed_before + (time.time() - t0), "health": health}
            if filt is not None:
                info["filter"] = filt.info()
            self.store.set_api_status(name, status, reason, info)
        return ApiResult(name, status, reason)

    # -- pieces ----------------------------------------------------------------
    def _make_filter(self, spec: ApiSpec):
        if not self.cfg.ml_filter:
            return None
        from .filter import make_filter
        return make_filter(self.cfg, spec, self.store)

    def _decide(self, filt, batch):
        """-> (scores, decisions). decision: none (no filter) / warmup / accept /
        reject (predicted invalid) / crash (predicted crash); the loop settles
        crash into accept or known and turns reject and known into explore or
        discard / known."""
        if filt is None:
            return [None] * len(batch), [Decision.NONE] * len(batch)
        from .filter import decide
        return decide(filt, batch)

    def _execute(self, executor, spec, ai):
        from .execute.supervisor import RunResult
        from .materialize import CapExceeded
        try:
            res = executor.run(spec, ai)
            if res.outcome == Outcome.INVALID and res.stage == Stage.MATERIALIZE:
                # our own conversion failed before the API was called: not the
                # API's verdict, so neither executed nor a training label
                res.outcome = Outcome.SKIPPED
            return res
        except CapExceeded as e:
            return RunResult(outcome=Outcome.SKIPPED, exc_type="CapExceeded", message=str(e),
                             signature=None, duration=0.0, exit_code=None, signal_name=None)


# --------------------------------------------------------------------------

def run_campaign(cfg: CampaignConfig, *, show_progress: bool = True,
                 executor_factory=None) -> dict:
    """Run every API of ``cfg``; returns the summary dict (also summary.json)."""
    from .summary import summarize, write_summary
    cfg.validate()  # fields may have been changed since construction
    try:
        os.makedirs(cfg.out, exist_ok=True)
    except OSError as e:
        raise SettingError("out", f"cannot create {cfg.out} ({e.strerror or e})") from None
    with Store(cfg.out) as store:
        if store.apis() and not cfg.resume:
            raise UserError(f"{cfg.out} already holds a campaign: pass --resume to continue it "
                            "or choose another --out")
        store.set_meta("config", cfg.to_json())
    owned = None
    if executor_factory is None:
        executor_factory = owned = _Executors(cfg)

    bar = _Progress(cfg, show_progress)
    try:
        if cfg.jobs <= 1 or len(cfg.apis) <= 1:
            for api in cfg.apis:
                with Store(cfg.out) as st:
                    ApiCampaign(cfg, api, st, executor_factory, bar.update).run()
        else:
            _run_parallel(cfg, bar)
    finally:
        bar.close()
        if owned is not None:
            owned.close()
    with Store(cfg.out) as store:
        summary = summarize(store, cfg)
    write_summary(cfg.out, summary)
    return summary


class _Executors:
    """One persistent worker per framework, reused across the APIs a process
    runs (starting TensorFlow costs seconds; a crash or timeout restarts the
    worker inside the Executor)."""

    def __init__(self, cfg: CampaignConfig):
        self.cfg = cfg
        self.by_framework: dict = {}

    def __call__(self, framework: str):
        ex = self.by_framework.get(framework)
        if ex is None:
            from .execute.supervisor import Executor
            kw: dict[str, Any] = {"timeout": self.cfg.timeout,
                                  "log_dir": os.path.join(self.cfg.out, "logs"),
                                  "warm_spare": self.cfg.warm_spare}
            if self.cfg.mem_limit_mb is not None:
                kw["mem_limit_mb"] = self.cfg.mem_limit_mb
            ex = self.by_framework[framework] = Executor(framework, **kw)
        return ex

    def close(self) -> None:
        for ex in self.by_framework.values():
            ex.close()
        self.by_framework.clear()


_PROCESS_EXECUTORS: dict = {}


def _process_executors(cfg: CampaignConfig) -> _Executors:
    key = (cfg.out, cfg.timeout, cfg.mem_limit_mb, cfg.warm_spare)
    ex = _PROCESS_EXECUTORS.get(key)
    if ex is None:
        import atexit
        ex = _PROCESS_EXECUTORS[key] = _Executors(cfg)
        atexit.register(ex.close)
    return ex


_POOL_QUEUE: Any = None   #: progress queue of this pool process (set by _pool_init)
#: how often a pool process checks that the campaign process is still there
PARENT_POLL_S = 0.5


def _pool_init(queue, parent: int) -> None:
    """Runs first in each pool process: keep the progress queue, and watch
    the campaign process. When it is gone (killed), the pool process stops its
    framework workers and exits at once instead of running on as an orphan;
    everything recorded so far stays in the store (each row is committed)."""
    global _POOL_QUEUE
    _POOL_QUEUE = queue
    threading.Thread(target=_watch_parent, args=(parent,), name="acetest-parent-watch",
                     daemon=True).start()


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_S)
    for ex in list(_PROCESS_EXECUTORS.values()):
        try:
            ex.close()
        except Exception:
            pass
    os._exit(3)


def _api_process(cfg: CampaignConfig, api: str, parent: int) -> tuple:
    """One API in a pool process (own Z3 context, own worker, own store handle)."""

    def progress(a, done, total):
        if os.getppid() != parent:
            raise SystemExit("campaign process gone")
        _POOL_QUEUE.put((a, done, total))

    with Store(cfg.out) as st:
        res = ApiCampaign(cfg, api, st, _process_executors(cfg), progress).run()
    return res.api, res.status, res.reason


def _run_parallel(cfg: CampaignConfig, bar: "_Progress") -> None:
    """APIs on ``cfg.jobs`` spawned processes: Z3 contexts are not shared
    between threads, and each process drives its own framework worker. No
    manager process: the progress queue is handed to the pool processes when
    they start."""
    import multiprocessing as mp
    import queue as queue_mod
    from concurrent.futures import ProcessPoolExecutor, wait, FIRST_COMPLETED
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    with ProcessPoolExecutor(max_workers=cfg.jobs, mp_context=ctx, initializer=_pool_init,
                             initargs=(q, os.getpid())) as pool:
        pending = {pool.submit(_api_process, cfg, api, os.getpid()) for api in cfg.apis}
        while pending:
            done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            while True:
                try:
                    bar.update(*q.get_nowait())
                except queue_mod.Empty:
                    break
            for fut in done:
                fut.result()  # re-raise a failure of the API process
    while True:  # the last updates
        try:
            bar.update(*q.get_nowait())
        except queue_mod.Empty:
            break
    q.close()


class _Progress:
    """One progress bar over the whole campaign's execution budget."""

    def __init__(self, cfg: CampaignConfig, enabled: bool):
        self.lock = threading.Lock()
        self.done: dict[str, int] = {}
        self.total = cfg.budget * len(cfg.apis)
        self.bar = None
        if enabled:
            from tqdm import tqdm
            self.bar = tqdm(total=self.total, unit="run", dynamic_ncols=True, smoothing=0.05)

    def update(self, api: str, done: int, total: int) -> None:
        with self.lock:
            prev = self.done.get(api, 0)
            self.done[api] = done
            if self.bar is not None:
                self.bar.set_postfix_str(api.split(".")[-1][:28], refresh=False)
                self.bar.update(done - prev)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
