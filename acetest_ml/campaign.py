"""The campaign loop: sample -> (score / filter) -> execute -> store.

One ``ApiCampaign`` per API. Candidates come from a seeded Sampler in a fixed
order; each gets an index, and every candidate (executed or discarded) is
written to the store, so ``--resume`` replays the sampler up to the first
unrecorded index and goes on from there. The budget counts executed inputs.
Each API's candidates are drawn in a process of its own
(:mod:`acetest_ml.generate`), so a seed gives the same records however the
APIs are spread: one after the other (``jobs`` 1), on ``jobs`` pool
processes, or as Ray tasks (:mod:`acetest_ml.distributed`). A failure inside
one API is recorded against it (status ``error`` and the reason) and the
campaign goes on.
"""
from __future__ import annotations

import hashlib
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from .errors import UserError
from .model import AbstractInput, ApiSpec
from .settings import CampaignConfig, SettingError  # noqa: F401  (re-exported)
from .outcome import FAILURES, ApiStatus, Decision, Outcome, Stage
from .store import Store

CRASH_OUTCOMES = FAILURES
#: an API's health (summary ``health``): ok, or why its figures are weak
HEALTH_OK = "ok"
HEALTH_FILTER_TOO_MUCH = "filter_too_much"   #: stopped at the candidate cap
#: an API our own code failed on (status ``error``: the reason names the exception)
STATUS_ERROR = ApiStatus.ERROR


def api_seed(seed: int, api: str) -> int:
    """The sampler seed of one API in a campaign: stable across runs."""
    h = hashlib.sha256(f"{seed}:{api}".encode()).digest()
    return int.from_bytes(h[:4], "little") & 0x7FFFFFFF


# --------------------------------------------------------------------------
# resolving an API to a spec and its constraint sets

def resolve(cfg: CampaignConfig, api: str, spec: Optional[ApiSpec] = None):
    """-> (spec, problems, notes). Raises UserError when the API cannot run.
    ``spec``: the API's registry spec when the caller has it already (see
    :func:`spec_hint`)."""
    if cfg.constraints_by_api.get(api, cfg.constraints) == "acetest":
        data = _acetest_data(cfg.acetest_data)
        loaded = data.load(api, registry_spec=spec, extensions=cfg.acetest_extensions)
        spec, problems = loaded.spec, loaded.problems
        notes: dict[str, Any] = {"constraints": "acetest",
                                 "acetest_extensions": cfg.acetest_extensions,
                                 "skipped_files": [list(x) for x in loaded.skipped]}
    else:
        from .spec import get_spec
        from .solve.registry import RegistryProblem
        from .solve.rules import load_rules_file
        if spec is None:
            spec = get_spec(api, cfg.framework)
        rules = load_rules_file(cfg.rules).get(spec.name, []) if cfg.rules else []
        problems = [RegistryProblem(spec, rules, rules_source=cfg.rules or "rules")]
        notes = {"constraints": "registry", "rules": len(rules)}
    if spec.unsupported:
        raise UserError(f"{spec.name} is not supported: {spec.unsupported}")
    from .execute.frameworks import check_target
    check_target(spec.framework, spec.name)  # a name the worker would refuse to call
    if not problems:
        raise UserError(f"{spec.name}: no satisfiable constraint set")
    return spec, problems, notes


def spec_hint(cfg: CampaignConfig, api: str) -> Optional[ApiSpec]:
    """What the generator process needs from the framework's registry (so it
    never imports TensorFlow or PyTorch itself): the registry spec, or None
    when the ACETest data describes the API. Raises UserError for an API
    that cannot run."""
    if cfg.constraints_by_api.get(api, cfg.constraints) == "acetest":
        data = _acetest_data(cfg.acetest_data)
        if data.has_op_json(api):
            return None
        try:
            return data._tf_spec(data.normalize(api))
        except UserError:
            return None  # load() reports it
    from .spec import get_spec
    return get_spec(api, cfg.framework)


def api_name(cfg: CampaignConfig, api: str) -> str:
    """The name an API's runs are recorded under (before it is resolved)."""
    if cfg.constraints_by_api.get(api, cfg.constraints) == "acetest":
        from .spec.acetest_data import AcetestData
        return AcetestData.normalize(api)
    return api


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

#: after REJECT_FLOOR_FACTOR x known_crash_floor candidates in a row not run,
#: the next predicted-invalid candidate runs (recorded as explore). The known
#: crash comes first although it costs a worker restart: the nearest-neighbour
#: signature prediction is rough, and those runs find new signatures (with the
#: order swapped, the filtered arm of Conv2DBackpropInput ran 964 inputs in 15 s
#: instead of 444 but found 2 signatures instead of 6)
REJECT_FLOOR_FACTOR = 4


@dataclass
class ApiResult:
    api: str
    status: str                 # an ApiStatus
    reason: Optional[str] = None
    summary: dict = field(default_factory=dict)


@dataclass
class ResumeState:
    """What the store holds of one API already (all zero for a fresh one)."""
    start: int = 0              # next candidate index
    executed: int = 0
    explored: int = 0
    elapsed: float = 0.0
    idle: int = 0               # candidates not run since the last executed one
    passes: int = 0             # executed runs that passed

    @classmethod
    def read(cls, store: Store, cfg: CampaignConfig, name: str) -> "ResumeState":
        seed = api_seed(cfg.seed, name)
        prior = store.api_statuses().get(name, {}).get("info", {})
        start = store.next_index(name, seed)
        last_run = store.db.execute("SELECT MAX(idx) FROM candidates WHERE api = ? AND seed = ? AND "
                                    "outcome IS NOT NULL", (name, seed)).fetchone()[0]
        return cls(start=start, executed=store.count_executed(name, seed),
                   explored=store.count_decision(name, seed, Decision.EXPLORE),
                   elapsed=float(prior.get("elapsed", 0.0)) if cfg.resume else 0.0,
                   idle=start - (last_run + 1 if last_run is not None else 0),
                   passes=store.count_outcome(name, seed, Outcome.PASS.value))


class StoreSink:
    """Where an ApiCampaign puts what it produces: rows and statuses into the
    results store, crashes into the campaign's bug folders. (On Ray the sink
    streams the same calls back to the driver, which owns the store.)"""

    def __init__(self, store: Store, out: str):
        self.store = store
        self.out = out

    def rows(self, rows: list[tuple]) -> None:
        self.store.add_many(rows)

    def status(self, api: str, status: str, reason: Optional[str], info: dict) -> None:
        self.store.set_api_status(api, status, reason, info)

    def bug(self, spec: ApiSpec, ai: AbstractInput, res, **kw) -> None:
        from .triage import record_bug  # one bug folder per signature
        record_bug(self.out, spec, ai, res, **kw)

    def state(self, cfg: CampaignConfig, name: str) -> ResumeState:
        return ResumeState.read(self.store, cfg, name)

    @property
    def records_source(self):
        """What a resumed online filter relearns from (``.records(...)``)."""
        return self.store


class ApiCampaign:
    """One API: its candidate stream (own process), filter, worker and sink.
    Whatever goes wrong in here is recorded against the API (status
    ``error`` with the reason); it never ends the campaign."""

    def __init__(self, cfg: CampaignConfig, api: str, sink, executor_factory,
                 progress: Callable[..., None] | None = None, spec: Optional[ApiSpec] = None,
                 state: Optional[ResumeState] = None):
        self.cfg = cfg
        self.api = api
        self.sink = StoreSink(sink, cfg.out) if isinstance(sink, Store) else sink
        self.executor_factory = executor_factory
        self.progress = progress or (lambda *a: None)
        self.spec_given = spec
        self.state_given = state

    def run(self) -> ApiResult:
        from .generate import CandidateStream
        try:
            spec = self.spec_given or spec_hint(self.cfg, self.api)
        except UserError as e:
            self.sink.status(self.api, ApiStatus.SKIPPED, str(e), {})
            return ApiResult(self.api, ApiStatus.SKIPPED, str(e))
        except Exception as e:
            return self._error(self.api, e)
        name = spec.name if spec is not None else api_name(self.cfg, self.api)
        state = self.state_given or self.sink.state(self.cfg, name)
        try:
            stream = CandidateStream(self.cfg, self.api, spec, state.start)
        except Exception as e:
            return self._error(name, e)
        try:
            if stream.status == "skip":
                self.sink.status(name, ApiStatus.SKIPPED, stream.reason, {})
                return ApiResult(name, ApiStatus.SKIPPED, stream.reason)
            if stream.status != "ready":
                return self._error(name, stream.reason)
            return self._loop(stream, state)
        except Exception as e:
            return self._error(name, e)
        finally:
            stream.close()

    def _error(self, name: str, e) -> ApiResult:
        reason = e if isinstance(e, str) else " ".join(f"{type(e).__name__}: {e}".split())[:500]
        try:
            self.sink.status(name, STATUS_ERROR, reason, {})
        except Exception:
            pass
        return ApiResult(name, STATUS_ERROR, reason)

    def _loop(self, stream, state: ResumeState) -> ApiResult:
        from .filter import explorable
        from .generate import GenerationError
        from .solve.sampler import NoSolutionError
        cfg = self.cfg
        spec, notes = stream.spec, dict(stream.notes)
        name = spec.name
        notes["spec"] = spec.to_dict()  # training reads the spec the runs were made with
        seed = api_seed(cfg.seed, name)
        executed = state.executed
        crashes = 0
        self.bug_errors: list[str] = []
        filt = self._make_filter(spec)
        gate = None  # filter policy rate: is a predicted-invalid candidate worth its run?
        if filt is not None and cfg.filter_policy == "rate":
            from .filter import RateGate
            gate = RateGate(state.passes, state.elapsed)
        # exploration runs so far (their share of executed runs is bounded)
        self.explored = state.explored
        self.idle = state.idle  # candidates in a row not run
        idx = state.start
        t0 = time.time()
        self.sink.status(name, ApiStatus.RUNNING, None, {**notes, "elapsed": state.elapsed})
        self.progress(name, executed, cfg.budget, crashes)
        cap = cfg.candidate_cap
        status, reason, health = ApiStatus.DONE, None, HEALTH_OK
        try:
            executor = self.executor_factory(spec.framework)
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
                n = self._batch_size(filt, cap, idx)
                try:
                    batch = stream.take(n)
                except NoSolutionError as e:
                    status, reason = ApiStatus.SKIPPED, f"{name}: {e}"
                    break
                except GenerationError as e:
                    status, reason = STATUS_ERROR, f"generator: {e}"
                    break
                scores, decisions = self._decide(filt, batch)
                rows = []
                for pos, (ai, score, decision) in enumerate(zip(batch, scores, decisions)):
                    if decision == Decision.CRASH:  # predicted crash: run it unless its bug is known
                        decision = filt.settle_crash(ai, score)
                        if (decision == Decision.KNOWN and cfg.known_crash_floor
                                and self.idle >= cfg.known_crash_floor):
                            # nothing else ran for a while: a known crash beats drawing on
                            decision = Decision.ACCEPT
                            filt.counts["floor_runs"] += 1
                    if decision in (Decision.REJECT, Decision.KNOWN):
                        # not worth a run by the model (predicted invalid, or a
                        # known crash): run it anyway while exploration runs
                        # are below their share of the executed budget
                        if (self.explored < cfg.exploration * (executed + 1) and executed < cfg.budget
                                and explorable(decision, score, filt.threshold, cfg.explore_band)):
                            decision = Decision.EXPLORE
                            self.explored += 1
                        elif (decision == Decision.REJECT and cfg.lift_check
                              and filt.lift.none):
                            # discarding buys nothing here (see filter.Lift)
                            decision = Decision.BYPASS
                        elif (decision == Decision.REJECT and gate is not None
                              and gate.worth(score, time.time() - t0)):
                            decision = Decision.CHEAP
                        elif (decision == Decision.REJECT and cfg.known_crash_floor
                              and self.idle >= REJECT_FLOOR_FACTOR * cfg.known_crash_floor):
                            # the model rejects nearly everything (e.g. learned rules
                            # moved the inputs away from its training runs): run one
                            # anyway, so the API keeps meeting new behaviour
                            decision = Decision.EXPLORE
                            filt.counts["reject_floor_runs"] += 1
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
                        self.idle += 1
                        continue
                    if cfg.time_budget is not None and time.time() - t0 >= cfg.time_budget:
                        break  # not recorded: a resumed campaign regenerates it identically
                    t_run = time.perf_counter()
                    res = self._execute(executor, spec, ai)
                    if gate is not None:
                        gate.observe(res.outcome, time.perf_counter() - t_run,
                                     accepted=decision == Decision.ACCEPT)
                    self.idle = 0
                    rows.append((name, seed, idx, ai.dumps(), score, decision, res.outcome,
                                 res.exc_type, res.message, res.signature, res.duration))
                    resolved = sent = False
                    if Outcome(res.outcome).executed:
                        executed += 1
                        if filt is not None:
                            filt.observe(ai, res.outcome, res.signature)
                            filt.tally(decision, score, res.outcome)
                        if cfg.learn_rules:
                            # the next take's size, as the loop will compute it
                            # (0: the budget is spent, no take follows)
                            next_n = (self._batch_size(filt, cap, idx + 1)
                                      if executed < cfg.budget and idx + 1 < cap else 0)
                            stream.observe_send(ai, res.outcome, res.message,
                                                last=pos == len(batch) - 1, next_n=next_n,
                                                signature=res.signature)
                            sent = True
                    idx += 1
                    # each executed run is committed with the discards before it
                    # (while the learner works on it)
                    self.sink.rows(rows)
                    rows = []
                    if sent:
                        resolved = stream.observe_result()
                    if res.outcome in CRASH_OUTCOMES:
                        crashes += 1
                        self._file_bug(spec, ai, res, seed, idx - 1, executor)
                    self.progress(name, executed, cfg.budget, crashes)
                    if resolved:
                        break  # new rule set: the rest of the batch is stale
                self.sink.rows(rows)
        except Exception as e:
            status, reason = STATUS_ERROR, " ".join(f"{type(e).__name__}: {e}".split())[:500]
        finally:
            info = {**notes, "elapsed": state.elapsed + (time.time() - t0), "health": health}
            if filt is not None:
                info["filter"] = filt.info()
                if gate is not None:
                    info["filter"]["rate"] = gate.info(time.time() - t0)
            if self.bug_errors:
                info["bug_folder_errors"] = self.bug_errors[:5]
            if cfg.learn_rules:
                info["learned"] = stream.learned_info()
            self.sink.status(name, status, reason, info)
        return ApiResult(name, status, reason)

    # -- pieces ----------------------------------------------------------------
    def _batch_size(self, filt, cap: int, idx: int) -> int:
        # batches only once a model scores them (warm-up runs one by one,
        # so the filter switches on as soon as it is trained)
        return max(1, min(self.cfg.batch, cap - idx)) if filt is not None and filt.active else 1

    def _make_filter(self, spec: ApiSpec):
        if not self.cfg.ml_filter:
            return None
        from .filter import make_filter
        return make_filter(self.cfg, spec, self.sink.records_source)

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

    def _file_bug(self, spec, ai, res, seed, idx, executor) -> None:
        """File a crash or timeout in its bug folder (the run itself is already
        in the store; a folder we cannot write is noted in the API's info)."""
        try:
            self.sink.bug(spec, ai, res, seed=seed, idx=idx, timeout=self.cfg.timeout,
                          framework_version=getattr(executor, "worker_version", None))
        except Exception as e:
            self.bug_errors.append(" ".join(f"{type(e).__name__}: {e}".split())[:300])


# --------------------------------------------------------------------------

def run_campaign(cfg: CampaignConfig, *, show_progress: bool = True,
                 executor_factory=None, ray_address: Optional[str] = None) -> dict:
    """Run every API of ``cfg``; returns the summary dict (also summary.json).

    Every API's outcome, failures included, is recorded against that API; the
    summary is written whatever happened to single APIs. ``ray_address``
    runs the APIs as Ray tasks (see :mod:`acetest_ml.distributed`)."""
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
    bar = _Progress(cfg, show_progress)
    try:
        if ray_address is not None:
            from .distributed import run_on_ray
            run_on_ray(cfg, ray_address)
        elif executor_factory is not None or cfg.jobs <= 1 or len(cfg.apis) <= 1:
            if executor_factory is None:
                executor_factory = owned = _Executors(cfg)
            with Store(cfg.out) as st:
                for api in cfg.apis:
                    ApiCampaign(cfg, api, st, executor_factory).run()
        else:
            _run_parallel(cfg)
    finally:
        bar.close()
        if owned is not None:
            owned.close()
    with Store(cfg.out) as store:
        summary = summarize(store, cfg)
    write_summary(cfg.out, summary)
    if cfg.learn_rules:
        from .learn import learned_from_summary, write_rules_yaml
        write_rules_yaml(os.path.join(cfg.out, "learned_rules.yaml"), learned_from_summary(summary),
                         header=f"campaign {cfg.out}, seed {cfg.seed}, budget {cfg.budget}")
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
                                  "warm_spare": self.cfg.warm_spare, "spares": self.cfg.spares}
            if self.cfg.mem_limit_mb is not None:
                kw["mem_limit_mb"] = self.cfg.mem_limit_mb
            onednn = self.cfg.onednn
            if onednn is None and self.cfg.constraints == "acetest" and not self.cfg.constraints_by_api:
                onednn = False
            if framework == "tf" and onednn is not None:
                kw["env"] = {"TF_ENABLE_ONEDNN_OPTS": "1" if onednn else "0"}
            ex = self.by_framework[framework] = Executor(framework, **kw)
        return ex

    def close(self) -> None:
        for ex in self.by_framework.values():
            ex.close()
        self.by_framework.clear()


_PROCESS_EXECUTORS: dict = {}


def _process_executors(cfg: CampaignConfig) -> _Executors:
    key = (cfg.out, cfg.timeout, cfg.mem_limit_mb, cfg.warm_spare, cfg.spares, cfg.onednn,
           cfg.constraints)
    ex = _PROCESS_EXECUTORS.get(key)
    if ex is None:
        import atexit
        ex = _PROCESS_EXECUTORS[key] = _Executors(cfg)
        atexit.register(ex.close)
    return ex


#: how often a pool process checks that the campaign process is still there
PARENT_POLL_S = 0.5


def _pool_init(parent: int) -> None:
    """Runs first in each pool process: watch the campaign process. When it
    is gone (killed), the pool process stops its framework workers and exits
    at once instead of running on as an orphan;
    everything recorded so far stays in the store (each row is committed)."""
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
    """One API in a pool process (own worker, own store handle). Stops when
    the campaign process is gone (killed), instead of running on as an
    orphan; everything recorded so far stays in the store."""

    def alive(*_):
        if os.getppid() != parent:
            raise SystemExit("campaign process gone")

    with Store(cfg.out) as st:
        res = ApiCampaign(cfg, api, st, _process_executors(cfg), alive).run()
    return res.api, res.status, res.reason


#: attempts per API when its pool process dies under it
POOL_ATTEMPTS = 2


def _run_parallel(cfg: CampaignConfig) -> None:
    """APIs on ``cfg.jobs`` spawned processes, each driving its own framework
    worker. A pool process that dies (taking the pool down) costs the APIs
    it ran one attempt; they continue from what the store holds."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, wait, FIRST_COMPLETED
    from concurrent.futures.process import BrokenProcessPool
    ctx = mp.get_context("spawn")
    todo = list(cfg.apis)
    attempts: dict[str, int] = {}
    while todo:
        broken: list[str] = []
        with ProcessPoolExecutor(max_workers=cfg.jobs, mp_context=ctx, initializer=_pool_init,
                                 initargs=(os.getpid(),)) as pool:
            futures = {pool.submit(_api_process, cfg, api, os.getpid()): api for api in todo}
            pending = set(futures)
            while pending:
                done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                for fut in done:
                    api = futures[fut]
                    try:
                        fut.result()
                    except BrokenProcessPool:
                        broken.append(api)
                    except Exception as e:  # our failure outside ApiCampaign's own guard
                        _record_error(cfg, api, e)
        todo = []
        for api in broken:
            attempts[api] = attempts.get(api, 0) + 1
            if attempts[api] >= POOL_ATTEMPTS and _started(cfg, api):
                _record_error(cfg, api, f"pool process died while running it ({attempts[api]} attempts)")
            else:
                todo.append(api)


def _started(cfg: CampaignConfig, api: str) -> bool:
    with Store(cfg.out) as st:
        return st.api_statuses().get(api_name(cfg, api), {}).get("status") == ApiStatus.RUNNING


def _record_error(cfg: CampaignConfig, api: str, e) -> None:
    reason = e if isinstance(e, str) else " ".join(f"{type(e).__name__}: {e}".split())[:500]
    with Store(cfg.out) as st:
        st.set_api_status(api_name(cfg, api), STATUS_ERROR, reason, {})


class _Progress:
    """One progress bar over the whole campaign, fed from the results store
    (the single source of truth, whichever process or Ray node ran the runs):
    a thread reads the rows added since its last look every half second.
    Shows runs done / total, runs per second, APIs done, crashes so far."""

    FINAL = (ApiStatus.DONE, ApiStatus.SKIPPED, ApiStatus.UNHEALTHY, STATUS_ERROR)

    def __init__(self, cfg: CampaignConfig, enabled: bool, interval: float = 0.5):
        self.cfg = cfg
        self.total = cfg.budget * len(cfg.apis)
        self.n_apis = len(cfg.apis)
        self.bar = None
        self.executed: dict[str, int] = {}
        self.crashes = 0
        self.finished: set[str] = set()
        self.last_id = 0
        self._stop = threading.Event()
        self._thread = None
        if enabled:
            from tqdm import tqdm
            self.bar = tqdm(total=self.total, unit="run", dynamic_ncols=True, smoothing=0.1)
            self._thread = threading.Thread(target=self._poll_loop, daemon=True)
            self._thread.start()

    def _poll_loop(self) -> None:
        import sqlite3
        db = sqlite3.connect(os.path.join(self.cfg.out, "runs.sqlite"), timeout=30.0)
        try:
            while True:
                try:
                    self.poll(db)
                except sqlite3.Error:
                    pass
                if self._stop.wait(0.5):
                    self.poll(db)
                    return
        finally:
            db.close()

    def poll(self, db) -> None:
        new = 0
        for rid, api, outcome in db.execute(
                "SELECT id, api, outcome FROM candidates WHERE id > ? ORDER BY id", (self.last_id,)):
            self.last_id = rid
            if outcome in ("pass", "invalid", "crash", "timeout"):
                self.executed[api] = self.executed.get(api, 0) + 1
                new += 1
                if outcome in ("crash", "timeout"):
                    self.crashes += 1
        for api, status in db.execute("SELECT api, status FROM api_status"):
            if status in self.FINAL and api not in self.finished:
                self.finished.add(api)
                # an API that stops short of its budget shrinks the total
                short = self.cfg.budget - min(self.cfg.budget, self.executed.get(api, 0))
                if short and self.bar is not None:
                    self.bar.total = max(self.bar.n + new, self.bar.total - short)
        if self.bar is not None:
            self.bar.set_postfix_str(f"APIs {len(self.finished)}/{self.n_apis}, "
                                     f"crashes {self.crashes}", refresh=False)
            self.bar.update(new)
            self.bar.refresh()

    def close(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=10)
        if self.bar is not None:
            self.bar.close()
