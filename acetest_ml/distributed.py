"""Campaigns on a Ray cluster (``campaign --ray ADDRESS``).

Each API is one Ray task (a streaming generator) that runs the API with its
own framework worker on whichever node Ray picks and streams back what it
produces: candidate rows, status changes and crashes (filed into the
driver's bug folders). The driver
writes them into the campaign's one SQLite store as they arrive, so the
store stays the single source of truth: ``--resume`` works across a Ray run,
and the progress bar reads it as it does locally.

A task lost with its worker process or node is started again from what the
store holds for that API (the resume path: the candidate stream is replayed
up to the first unrecorded index), so nothing recorded is lost and nothing is
recorded twice (rows are also unique on (api, seed, idx)). Ray's own task
retries are off: they would re-run a task from its start.

``ADDRESS``: ``local`` starts a Ray instance on this machine with ``jobs``
CPUs; ``auto``, ``host:port`` or ``ray://host:port`` join a running cluster
(every node needs acetest-ml and the frameworks installed).
"""
from __future__ import annotations

import collections
import dataclasses
import os
import queue
import tempfile
import threading
import time
from typing import Optional

from .errors import UserError

#: attempts per API when its task is lost (worker process or node died)
RAY_ATTEMPTS = 3
#: a task sends what it has at least this often (seconds)
FLUSH_S = 0.2


#: Ray picks the machine's network address for a node unless told that
#: clusters are off; a ``local`` instance (and the tests' cluster) then lives
#: on 127.0.0.1 only. Read by Ray when it is imported.
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def loopback_only() -> None:
    """Keep a Ray instance started from this process on the loopback
    address (call before Ray is imported)."""
    os.environ.update(LOOPBACK_ENV)


def import_ray():
    """The ray module, or a one-line UserError saying how to get it."""
    try:
        import ray
    except ImportError:
        raise UserError("--ray needs Ray, which is not installed: pip install -e '.[ray]'") from None
    return ray


#: attempts at starting a local instance: Ray waits a fixed 30 s for its
#: raylet, which a heavily loaded machine can miss
LOCAL_START_ATTEMPTS = 3


def _start_local(ray, jobs: int, env: dict) -> None:
    for attempt in range(1, LOCAL_START_ATTEMPTS + 1):
        try:
            ray.init(address="local", num_cpus=max(1, jobs), include_dashboard=False, log_to_driver=False,
                     runtime_env={"env_vars": env}, logging_level="ERROR")
            return
        except Exception as e:  # Ray raises a bare Exception for a node that missed its start-up wait
            if "timed out during startup" not in str(e):
                raise
            try:
                ray.shutdown()
            except Exception:
                pass
            if attempt == LOCAL_START_ATTEMPTS:
                raise RuntimeError(f"the local Ray instance did not start in {LOCAL_START_ATTEMPTS} attempts "
                                   f"(machine overloaded?): {e}") from None


def _connect(ray, address: str, jobs: int) -> bool:
    """Connect (or start, for ``local``); True when we must shut it down."""
    if ray.is_initialized():
        return False
    pkg_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {"OMP_NUM_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    try:
        if address == "local":
            env.update(LOOPBACK_ENV)
            env["PYTHONPATH"] = os.pathsep.join(
                [pkg_root] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []))
            # address="local" always starts a new instance: without it Ray
            # joins a cluster it finds on this machine (and refuses num_cpus)
            _start_local(ray, jobs, env)
        else:
            ray.init(address=address, log_to_driver=False, runtime_env={"env_vars": env},
                     logging_level="ERROR")
    except (ConnectionError, ValueError, RuntimeError) as e:
        raise UserError(f"cannot connect to the Ray cluster at {address}: "
                        + " ".join(str(e).split())[:300]) from None
    return True


# --------------------------------------------------------------------------
# the task side

class _Snapshot:
    """A resumed online filter's view of what the store held (``records``)."""

    def __init__(self, records):
        self._records = list(records or [])

    def records(self, api=None, *, executed_only=False, seed=None):
        return iter(self._records)


class _QueueSink:
    def __init__(self, q: "queue.Queue", prior):
        self.q = q
        self.records_source = _Snapshot(prior)

    def rows(self, rows):
        if rows:
            self.q.put(("rows", list(rows)))

    def status(self, api, status, reason, info):
        self.q.put(("status", (api, status, reason, info)))

    def bug(self, spec, ai, res, **kw):
        self.q.put(("bug", (spec, ai, res, kw)))

    def state(self, cfg, name):  # the driver always passes the state
        raise RuntimeError("no resume state given to a Ray task")


_TASK_EXECUTORS: dict = {}


def _task_executors(cfg):
    """One framework worker per framework, reused by the tasks a Ray worker
    process runs (worker logs go to a temporary folder on that node)."""
    from .campaign import _Executors
    key = (cfg.timeout, cfg.mem_limit_mb, cfg.warm_spare, cfg.spares)
    ex = _TASK_EXECUTORS.get(key)
    if ex is None:
        import atexit
        local = dataclasses.replace(cfg, out=tempfile.mkdtemp(prefix="acetest-ml-ray-"))
        ex = _TASK_EXECUTORS[key] = _Executors(local)
        atexit.register(ex.close)
    return ex


def api_task(cfg, api, spec, state, prior=None):
    """Run one API; yields lists of (kind, payload) messages, the last one
    holding ("result", (name, status, reason))."""
    from .campaign import ApiCampaign
    q: queue.Queue = queue.Queue()
    result: list = []

    def run():
        try:
            res = ApiCampaign(cfg, api, _QueueSink(q, prior), _task_executors(cfg),
                              spec=spec, state=state).run()
            result.append((res.api, res.status, res.reason))
        except BaseException as e:  # ApiCampaign records its own failures; this is a last resort
            result.append((api, "error", f"{type(e).__name__}: {e}"))
        finally:
            q.put(None)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    batch: list = []
    last = time.monotonic()
    while True:
        try:
            msg = q.get(timeout=FLUSH_S)
        except queue.Empty:
            msg = ()
        if msg is None:
            break
        if msg:
            batch.append(msg)
        if batch and (time.monotonic() - last >= FLUSH_S or len(batch) >= 500):
            yield batch
            batch, last = [], time.monotonic()
    t.join()
    yield batch + [("result", result[0] if result else (api, "error", "task ended without a result"))]


# --------------------------------------------------------------------------
# the driver side

def run_on_ray(cfg, address: str) -> None:
    """Run every API of ``cfg`` as Ray tasks, writing into ``cfg.out``'s store."""
    from .campaign import ResumeState, StoreSink, api_name, spec_hint
    from .store import Store
    ray = import_ray()
    owned = _connect(ray, address, cfg.jobs)
    try:
        task = ray.remote(api_task).options(num_cpus=1, max_retries=0, num_returns="streaming")
        with Store(cfg.out) as store:
            sink = StoreSink(store, cfg.out)
            running: dict = {}
            attempts: dict[str, int] = {}

            def submit(api: str) -> None:
                try:
                    spec = spec_hint(cfg, api)
                except UserError as e:
                    sink.status(api, "skipped", str(e), {})
                    return
                except Exception as e:
                    sink.status(api, "error", _reason(e), {})
                    return
                name = spec.name if spec is not None else api_name(cfg, api)
                state = ResumeState.read(store, cfg, name)
                prior = None
                if cfg.ml_filter:
                    from .campaign import api_seed
                    prior = list(store.records(name, executed_only=True, seed=api_seed(cfg.seed, name)))
                attempts[api] = attempts.get(api, 0) + 1
                running[task.remote(cfg, api, spec, state, prior)] = (api, name)

            # a bounded number of tasks in flight: the driver waits on few
            # generators, and the specs of later APIs are read as they start
            window = _window(ray, cfg.jobs)
            pending = collections.deque(cfg.apis)

            def top_up() -> None:
                while pending and len(running) < window:
                    submit(pending.popleft())

            while running or pending:
                top_up()
                if not running:
                    continue
                ready, _ = ray.wait(list(running), num_returns=1, timeout=1.0)
                for gen in ready:
                    api, name = running[gen]
                    try:
                        ref = next(gen)
                    except StopIteration:
                        del running[gen]
                        continue
                    try:
                        batch = ray.get(ref)
                    except ray.exceptions.RayTaskError as e:  # our code raised outside its guard
                        del running[gen]
                        sink.status(name, "error", _reason(e.cause or e), {})
                        continue
                    except ray.exceptions.RayError as e:      # worker process or node lost
                        del running[gen]
                        if attempts[api] < RAY_ATTEMPTS:
                            submit(api)
                        else:
                            sink.status(name, "error", f"Ray task lost {attempts[api]} times: "
                                        + _reason(e), {})
                        continue
                    _apply(sink, batch)
    finally:
        if owned:
            ray.shutdown()


#: tasks in flight per CPU of the cluster
TASKS_PER_CPU = 2


def _window(ray, jobs: int) -> int:
    try:
        cpus = int(ray.cluster_resources().get("CPU", jobs))
    except Exception:
        cpus = jobs
    return max(2, TASKS_PER_CPU * max(1, cpus))


def _apply(sink, batch) -> None:
    for kind, payload in batch:
        if kind == "rows":
            sink.rows(payload)
        elif kind == "status":
            sink.status(*payload)
        elif kind == "bug":
            spec, ai, res, kw = payload
            try:
                sink.bug(spec, ai, res, **kw)
            except Exception:
                pass  # the run itself is in the store


def _reason(e: BaseException) -> str:
    return " ".join(f"{type(e).__name__}: {e}".split())[:500]


def ray_version() -> Optional[str]:
    try:
        import ray
    except ImportError:
        return None
    return ray.__version__
