"""The supervisor: runs inputs in a worker process and labels each run.

``Executor(framework)`` gets a worker lazily (forked from a zygote with a
warm spare standing by, or started cold: see ``workers`` and ``Executor``),
sends one request per ``run`` and waits for the reply with a timeout:

- reply ``pass`` / ``invalid``          -> that outcome (the exception's type and message)
- no reply within ``timeout`` seconds   -> ``timeout``; the worker's process
  group is killed (SIGKILL) and the spare (or a new worker) takes the next run
- the worker dies (end of file)         -> ``crash``, with the exit code or
  signal and a crash signature read from that run's part of the worker's stderr

Worker stderr goes to a log file (``log_dir``/worker-<framework>.log and
.1.log, alternating between a worker and its spare; the zygote's own output in
.zygote.log; or a temporary directory), never to a pipe, so a chatty framework cannot deadlock
either side; the file offset at the start of each run delimits that run's
output.

Memory limit: ``mem_limit_mb`` is applied to the worker as RLIMIT_DATA (heap,
anonymous and other private writable mappings; Linux >= 4.7) rather than
RLIMIT_AS. Measured here: after importing and running a small op, TF 2.21 has
~1.4 GB of address space but ~370 MB of data, torch 2.13 ~600 MB / ~180 MB;
address space also grows with thread stacks and malloc arena reservations that
never hold data, so RLIMIT_DATA limits what matters without spurious failures.
With the limit, an oversized allocation surfaces as an exception in the worker
(TF ResourceExhaustedError, torch RuntimeError "can't allocate memory",
MemoryError) and is labelled invalid, or as an abort (std::bad_alloc) labelled
crash; it cannot hang the supervisor, which only ever waits with a deadline.
"""
from __future__ import annotations

import json
import os
import re
import select
import signal
import tempfile
import time
from dataclasses import dataclass, asdict
from pathlib import Path
from typing import Any, Optional

from ..errors import UserError
from ..materialize import (DEFAULT_MAX_BYTES, DEFAULT_MAX_ELEMENTS, CapExceeded,  # noqa: F401
                           check_caps, plan_call)
from ..model import AbstractInput, ApiSpec
from ..outcome import Outcome, Stage
from .frameworks import adapter_class
from .native_stack import top_frames
from .worker import HEADER, MAX_MESSAGE, encode_message, write_all
from .workers import ForkedWorker, PopenWorker, WorkerGone, Zygote, spawn_worker

DEFAULT_MEM_LIMIT_MB = 4096
DEFAULT_STARTUP_TIMEOUT = 180.0
#: warm spare workers per framework (primed, waiting while the current one runs)
DEFAULT_SPARES = 2
#: without a log_dir the temporary log is emptied between runs once larger than this
TEMP_LOG_MAX_BYTES = 64 * 2 ** 20
#: at most this much of a run's stderr is read back (from its start)
RUN_STDERR_MAX = 1 << 20
STDERR_KEEP = 8000


def _keep(text: str) -> str | None:
    """At most STDERR_KEEP characters of a run's stderr: its start (the fatal
    message, the native stack) and its end (the Python traceback)."""
    if len(text) <= STDERR_KEEP:
        return text or None
    head = STDERR_KEEP * 5 // 8
    return text[:head] + "\n[...]\n" + text[-(STDERR_KEEP - head):]

_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


_STAGES = {s.value for s in Stage}


class WorkerStartError(UserError):
    """The worker could not start (framework missing, import failure...)."""


class WorkerProtocolError(RuntimeError):
    """The worker sent something that is not a valid reply (a bug)."""


@dataclass
class RunResult:
    """The label of one run.

    outcome     an Outcome: pass | invalid | crash | timeout, or internal when
                acetest-ml's own conversion code failed (the campaign adds skipped)
    exc_type    invalid: ``module.Class`` of the exception
    message     invalid: first 2000 chars of the exception text;
                crash/timeout: a short description
    signature   crash only: ``SIGNAL: first fatal line`` (normalised), plus the
                top native frames when that line is generic (``crash_signature``)
    duration    seconds: around the call for pass/invalid (measured in the
                worker); from request to death / deadline for crash/timeout
    exit_code   crash: the worker's exit status (negative = killed by signal)
    signal_name crash: e.g. "SIGABRT"
    stage       invalid: Stage.CALL, or Stage.MATERIALIZE when building the arguments failed
    stderr      crash/timeout: the worker's stderr for this run (its first 5000
                and last 3000 chars when longer)
    """

    outcome: Outcome
    exc_type: Optional[str] = None
    message: Optional[str] = None
    signature: Optional[str] = None
    duration: float = 0.0
    exit_code: Optional[int] = None
    signal_name: Optional[str] = None
    stage: Optional[Stage] = None
    stderr: Optional[str] = None

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


# --------------------------------------------------------------------------
# Crash signatures
# --------------------------------------------------------------------------

# abseil / glog fatal line: "F0000 00:00:1795242746.751569    8320 file.cc:428] message"
_GLOG_FATAL = re.compile(r"^F\d{4}\s+[\d:.]+\s+\d+\s+(\S+:\d+\])\s?(.*)$")
_FATAL_LINES = [
    re.compile(r"^(terminate called .*)$"),
    re.compile(r"^(Fatal Python error: .*)$"),
    re.compile(r"^(\*\*\* (?:stack smashing|buffer overflow) detected.*)$"),  # glibc
    re.compile(r"^((?:double free|free\(\)|malloc\(\)|realloc\(\)|munmap_chunk\(\)|corrupted )"
               r".*)$"),
    re.compile(r"^((?:Aborted|Segmentation fault|Bus error|Floating point exception|"
               r"Illegal instruction)\b.*)$"),
]
_HEX = re.compile(r"0x[0-9a-fA-F]+")
#: element type names: one check failing for two dtype pairs is one bug
#: ("float expected, got int32" / "half expected, got int32")
_DTYPE = re.compile(r"\b(?:DT_[A-Z0-9_]+|b?float(?:16|32|64)?|half|double|q?u?int(?:8|16|32|64)|"
                    r"complex(?:64|128)|bool|string|resource|variant|qint\d+|quint\d+)\b")
#: numbers with their sign: "has value -N out of range" and "has value N out of
#: range" are one check failing on either side of the range
_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?![\w.])")
_SIGNED_N = re.compile(r"(?<![\w.])-N\b")


def _normalise(text: str) -> str:
    """Drop what varies between runs of the same bug: addresses, pids,
    element type names and the input-dependent numbers in the message."""
    text = _HEX.sub("0x?", text)
    text = _DTYPE.sub("T", text)
    text = _NUMBER.sub("N", text)
    return " ".join(text.split())[:300]


def renormalise(signature: str) -> str:
    """A signature recorded by an earlier version, with the normalisation
    added since (element type names, the sign of numbers)."""
    return _SIGNED_N.sub("N", _DTYPE.sub("T", signature))


def fatal_line(stderr_text: str) -> str | None:
    """The first line of the fatal message in a worker's stderr, normalised
    (None when there is none). For abseil/glog ``F`` lines the source location
    ``file.cc:123]`` is kept and the timestamp / thread id dropped."""
    for raw in stderr_text.splitlines():
        line = raw.strip()
        m = _GLOG_FATAL.match(line)
        if m:
            return f"{m.group(1)} {_normalise(m.group(2))}".strip()
        for pat in _FATAL_LINES:
            m = pat.match(line)
            if m:
                return _normalise(m.group(1))
    return None


#: fatal lines that name no bug (the signal's own words): the signature adds
#: the top native frames
_GENERIC_FATAL = re.compile(r"^(Fatal Python error: |(Aborted|Segmentation fault|Bus error|"
                            r"Floating point exception|Illegal instruction)\b)")
SIGNATURE_FRAMES = 3


def crash_signature(exit_code: int | None, stderr_text: str) -> str:
    """``SIGNAL: fatal line``; when the fatal line is generic (or missing),
    `` @ frame < frame < frame`` adds the top native frames, so crashes in
    different kernels get different signatures."""
    if exit_code is not None and exit_code < 0:
        try:
            head = signal.Signals(-exit_code).name
        except ValueError:
            head = f"signal {-exit_code}"
    else:
        head = f"exit {exit_code}"
    line = fatal_line(stderr_text)
    sig = f"{head}: {line}" if line else head
    if line is None or _GENERIC_FATAL.match(line):
        frames = top_frames(stderr_text, SIGNATURE_FRAMES)
        if frames:
            sig += " @ " + " < ".join(frames)
    return sig


def _signal_name(exit_code: int | None) -> str | None:
    if exit_code is None or exit_code >= 0:
        return None
    try:
        return signal.Signals(-exit_code).name
    except ValueError:
        return f"signal {-exit_code}"


# --------------------------------------------------------------------------
# Executor
# --------------------------------------------------------------------------

class _Timeout:
    pass


_TIMEOUT = _Timeout()


class Executor:
    """Runs inputs of one framework in an isolated, persistent worker.

    ``warm_spare`` (default on): workers are forked from a zygote that has
    imported the framework, and ``spares`` forked spares (2) wait, warmed up
    and primed, while the current worker runs; after a crash or timeout the
    oldest spare takes over at once and a new one is forked in the
    background. With ``async_fork`` (default) asking for that fork costs one
    message: the supervisor does not wait for the zygote's reply, and a
    crashing worker's notice (sent by its fatal-signal handler) spares the
    wait for the kernel to tear the dead process down; so a crash costs
    about the crashing run itself. Off: each worker is started cold (a new
    interpreter importing the framework), as before.
    """

    def __init__(self, framework: str, timeout: float = 10.0,
                 mem_limit_mb: int | None = DEFAULT_MEM_LIMIT_MB, log_dir: str | None = None, *,
                 startup_timeout: float = DEFAULT_STARTUP_TIMEOUT,
                 max_elements: int = DEFAULT_MAX_ELEMENTS, max_bytes: int = DEFAULT_MAX_BYTES,
                 env: dict[str, str] | None = None, warm_spare: bool = True,
                 spares: int = DEFAULT_SPARES, async_fork: bool = True):
        adapter_class(framework)  # raises UnknownFrameworkError early
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.framework = framework
        self.timeout = float(timeout)
        self.mem_limit_mb = mem_limit_mb
        self.startup_timeout = float(startup_timeout)
        self.max_elements = max_elements
        self.max_bytes = max_bytes
        self.extra_env = dict(env or {})
        self.warm_spare = bool(warm_spare)
        if int(spares) < 1:
            raise ValueError("spares must be >= 1")
        self.spares = int(spares)
        self.async_fork = bool(async_fork)
        self._tmpdir: tempfile.TemporaryDirectory | None = None
        if log_dir is None:
            self._tmpdir = tempfile.TemporaryDirectory(prefix="acetest-worker-")
            log_dir = self._tmpdir.name
        os.makedirs(log_dir, exist_ok=True)
        # log slots: the current worker's and one per spare (a forked
        # worker takes a slot its dead predecessor left)
        self._log_slots = tuple(os.path.join(log_dir, f"worker-{framework}" + (f".{i}" if i else "")
                                             + ".log") for i in range(self.spares + 1))
        self._zygote_log = os.path.join(log_dir, f"worker-{framework}.zygote.log")
        self._worker: PopenWorker | ForkedWorker | None = None
        self._spares: list[ForkedWorker] = []  # oldest first
        self._zygote: Zygote | None = None
        self._next_id = 0
        self.starts = 0          #: how many workers were taken into service
        self.cold_starts = 0     #: framework imports (cold workers or zygotes)
        self.last_start_wait = 0.0  #: seconds the last start() waited for a worker
        self.restart_wait = 0.0  #: seconds start() waited in total, after the first worker
        self.worker_version: str | None = None
        self.closed = False

    # -- context manager -----------------------------------------------------
    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:  # best effort; close() is the real API
        try:
            self.close()
        except Exception:
            pass

    @property
    def worker_pid(self) -> int | None:
        return self._worker.pid if self._worker is not None else None

    @property
    def log_path(self) -> str:
        """The current worker's stderr log."""
        return self._worker.log_path if self._worker is not None else self._log_slots[0]

    # -- worker lifecycle ------------------------------------------------------
    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # hide INFO/WARNING; ERROR and FATAL stay
        env.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                    "OPENBLAS_NUM_THREADS": "1", "TF_NUM_INTRAOP_THREADS": "1",
                    "TF_NUM_INTEROP_THREADS": "1", "PYTHONUNBUFFERED": "1"})
        env["PYTHONPATH"] = os.pathsep.join(
            [_PACKAGE_ROOT] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        env.update(self.extra_env)
        return env

    def _limits(self) -> None:  # runs in the child between fork and exec
        import resource
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if self.mem_limit_mb is not None:
            lim = int(self.mem_limit_mb) * 2 ** 20
            resource.setrlimit(resource.RLIMIT_DATA, (lim, lim))

    def _start_error(self, what: str, code: int | None, log_path: str, offset: int) -> WorkerStartError:
        tail = self._log_text(offset, log_path).strip().splitlines()[-1:] or ["(no output)"]
        where = "" if self._tmpdir is not None else f" [log: {log_path}]"
        return WorkerStartError(f"{self.framework} worker {what} (exit {code}): "
                                f"{tail[0].strip()}{where}")

    def start(self) -> None:
        """Start the worker now (otherwise the first run does) and wait until
        it has imported the framework (and, forked, warmed up)."""
        if self.closed:
            raise RuntimeError("executor is closed")
        if self._worker is not None and self._worker.alive():
            return
        self._discard_worker()
        t0 = time.monotonic()
        if self.warm_spare:
            self._worker = self._take_spare()
        else:
            self._worker = self._start_cold()
        self.last_start_wait = time.monotonic() - t0
        if self.starts:
            self.restart_wait += self.last_start_wait
        self.starts += 1
        if self.warm_spare:
            self._top_up()

    def _start_cold(self) -> PopenWorker:
        log_path = self._log_slots[0]
        offset = self._log_size(log_path)
        worker = spawn_worker(self.framework, log_path, self._env(), self._limits)
        self.cold_starts += 1
        msg = self._read_reply(time.monotonic() + self.startup_timeout, worker)
        if not isinstance(msg, dict) or not msg.get("ready"):
            what = "did not become ready" if msg is _TIMEOUT else "exited during start-up"
            raise self._start_error(what, worker.kill(), log_path, offset)
        self.worker_version = msg.get("version")
        return worker

    def _ensure_zygote(self) -> Zygote:
        if self._zygote is not None and self._zygote.alive():
            return self._zygote
        if self._zygote is not None:
            self._zygote.close()
        offset = self._log_size(self._zygote_log)
        z = Zygote(self.framework, self._zygote_log, self._env(), self._limits)
        self.cold_starts += 1
        if z.start(self.startup_timeout) is None:
            what = "exited during start-up" if z.exited else "did not become ready"
            raise self._start_error(what, z.last_exit, self._zygote_log, offset)
        self._zygote = z
        return z

    def _free_slot(self) -> str:
        busy = {w.log_path for w in (self._worker, *self._spares) if w is not None}
        path = next(p for p in self._log_slots if p not in busy)
        if self._tmpdir is not None and self._log_size(path) > TEMP_LOG_MAX_BYTES:
            os.truncate(path, 0)  # its last writer is dead
        return path

    def _fork(self) -> ForkedWorker:
        return self._ensure_zygote().fork(self._free_slot(), wait=not self.async_fork)

    def _top_up(self) -> None:
        """Fork spares until ``spares`` wait; they warm up while the current
        worker runs (with ``async_fork`` the zygote's reply is read later)."""
        while len(self._spares) < self.spares:
            try:
                self._spares.append(self._fork())
            except WorkerGone:
                return  # the next start() restarts the zygote

    def _take_spare(self) -> ForkedWorker:
        """The oldest warm spare (forking one if there is none), once it is
        ready; a spare that died or never got forked is replaced."""
        for attempt in (1, 2, 3):
            if not self._spares:
                try:
                    self._spares.append(self._fork())
                except WorkerGone:
                    if self._zygote is not None:
                        self._zygote.close()
                    self._spares.append(self._fork())
            worker = self._spares.pop(0)
            offset = 0 if attempt == 1 else self._log_size(worker.log_path)
            msg = self._read_reply(time.monotonic() + self.startup_timeout, worker)
            if isinstance(msg, dict) and msg.get("ready") and worker.pid is not None:
                self.worker_version = msg.get("version")
                return worker
            code = worker.kill()
            if worker.fork_failed is not None and attempt < 3:
                # the zygote died: its pending forks are gone too
                for w in self._spares:
                    w.kill()
                self._spares = []
                if self._zygote is not None:
                    self._zygote.close()
                continue
            if attempt >= 2:
                what = "did not become ready" if msg is _TIMEOUT else "exited during start-up"
                raise self._start_error(what, code, worker.log_path, offset)
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Stop the workers and the zygote and remove the temporary log
        directory, if any. They hold no state worth a clean shutdown (and TF
        takes seconds to exit), so their process groups are simply killed."""
        if self.closed:
            return
        self.closed = True
        self._kill()
        spares, self._spares = self._spares, []
        for spare in spares:
            spare.kill(wait=False)
        if self._zygote is not None:
            self._zygote.close()
            self._zygote = None
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None

    def _kill(self, wait: bool = True) -> int | None:
        """SIGKILL the current worker; returns its exit status (None without
        ``wait``)."""
        worker, self._worker = self._worker, None
        if worker is None:
            return None
        return worker.kill(wait=wait)

    def _discard_worker(self) -> None:
        if self._worker is not None:
            self._kill()

    # -- log file --------------------------------------------------------------
    def _log_size(self, path: str | None = None) -> int:
        try:
            return os.path.getsize(path or self.log_path)
        except OSError:
            return 0

    def _log_text(self, offset: int, path: str | None = None) -> str:
        try:
            with open(path or self.log_path, "rb") as f:
                f.seek(offset)
                data = f.read(RUN_STDERR_MAX)
        except OSError:
            return ""
        return data.decode("utf-8", errors="replace")

    # -- protocol --------------------------------------------------------------
    def _read_reply(self, deadline: float, worker=None) -> Any:
        """A message from the worker, None at end of file, or _TIMEOUT."""
        w = worker or self._worker
        assert w is not None, "no worker to read from"
        fd = w.recv_fd
        poller = select.poll()  # not select(): fds above 1024 must work too
        poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
        buf = bytearray()
        need = HEADER.size
        header_done = False
        while True:
            while len(buf) < need:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return _TIMEOUT
                if not poller.poll(max(1, int(remaining * 1000 + 0.999))):
                    continue
                try:
                    chunk = os.read(fd, min(need - len(buf), 1 << 20))
                except ConnectionResetError:  # a forked worker's socket, peer dead
                    return None
                if not chunk:
                    return None
                buf += chunk
            if header_done:
                return json.loads(bytes(buf[HEADER.size:]).decode("utf-8"))
            (length,) = HEADER.unpack(bytes(buf[:HEADER.size]))
            if length > MAX_MESSAGE:
                raise WorkerProtocolError(f"worker announced a {length}-byte message")
            need = HEADER.size + length
            header_done = True

    # -- running ---------------------------------------------------------------
    def run(self, spec: ApiSpec, ai: AbstractInput, timeout: float | None = None) -> RunResult:
        """Run ``ai`` and label it (``timeout`` overrides the executor's for
        this run; it covers building the tensors and the call). Raises
        CapExceeded (before touching the worker) when the input is over the
        size caps, and UserError subclasses when ``ai`` does not fit ``spec``."""
        limit = self.timeout if timeout is None else float(timeout)
        if spec.framework != self.framework:
            raise ValueError(f"{spec.name} is a {spec.framework} API; this executor runs "
                             f"{self.framework}")
        plan = plan_call(spec, ai)
        check_caps(ai, self.max_elements, self.max_bytes)
        self.start()
        if self._tmpdir is not None and self._log_size() > TEMP_LOG_MAX_BYTES:
            os.truncate(self.log_path, 0)  # the worker appends (O_APPEND), so this is safe
        self._next_id += 1
        rid = self._next_id
        log_path = self.log_path  # the run's own worker's log (the spare has another)
        offset = self._log_size(log_path)
        request = encode_message({"id": rid, "ai": ai.to_json(), "plan": plan})
        t0 = time.monotonic()
        try:
            assert self._worker is not None  # started above
            write_all(self._worker.send_fd, request)
            reply = self._read_reply(t0 + limit)
        except (BrokenPipeError, ConnectionResetError):
            reply = None
        elapsed = time.monotonic() - t0
        if isinstance(reply, dict) and reply.get("outcome") == "crash" and "signal" in reply:
            # the worker's fatal-signal handler: it is dying of that signal
            # and has written its stderr; no need to wait for its exit status
            self._kill(wait=False)
            code: int | None = -int(reply["signal"])
            text = self._log_text(offset, log_path)
            sig = _signal_name(code)
            return RunResult(outcome=Outcome.CRASH, duration=elapsed, exit_code=code, signal_name=sig,
                             signature=crash_signature(code, text),
                             message=f"worker died ({sig})", stderr=_keep(text))
        if reply is _TIMEOUT:
            self._kill(wait=False)
            return RunResult(outcome=Outcome.TIMEOUT, duration=elapsed,
                             message=f"no reply within {limit:g}s; worker killed",
                             stderr=_keep(self._log_text(offset, log_path)))
        if reply is None:
            code = self._kill()
            text = self._log_text(offset, log_path)
            sig = _signal_name(code)
            return RunResult(outcome=Outcome.CRASH, duration=elapsed, exit_code=code, signal_name=sig,
                             signature=crash_signature(code, text),
                             message=f"worker died ({sig or f'exit {code}'})",
                             stderr=_keep(text))
        if not isinstance(reply, dict) or reply.get("id") != rid or reply.get("outcome") not in (
                Outcome.PASS, Outcome.INVALID, Outcome.INTERNAL):
            self._kill()
            raise WorkerProtocolError(f"unexpected reply to request {rid}: {reply!r:.200}")
        if reply["outcome"] == Outcome.PASS:
            return RunResult(outcome=Outcome.PASS, duration=float(reply.get("duration", elapsed)))
        stage = reply.get("stage")
        message = reply.get("message")
        if reply["outcome"] == Outcome.INTERNAL:
            message = f"{message} [acetest-ml internal error at {reply.get('where')}]"
        return RunResult(outcome=Outcome(reply["outcome"]), exc_type=reply.get("exc_type"),
                         message=message,
                         stage=Stage(stage) if stage in _STAGES else stage,
                         duration=float(reply.get("duration", elapsed)))
