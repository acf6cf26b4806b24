"""The supervisor: runs inputs in a worker process and labels each run.

``Executor(framework)`` starts ``python -m acetest_ml.execute.worker`` lazily,
sends one request per ``run`` and waits for the reply with a timeout:

- reply ``pass`` / ``invalid``          -> that outcome (the exception's type and message)
- no reply within ``timeout`` seconds   -> ``timeout``; the worker's process
  group is killed (SIGKILL) and a new worker starts on the next run
- the worker dies (end of file)         -> ``crash``, with the exit code or
  signal and a crash signature read from that run's part of the worker's stderr

Worker stderr goes to a log file (``log_dir``/worker-<framework>.log, or a
temporary directory), never to a pipe, so a chatty framework cannot deadlock
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
import subprocess
import sys
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
from .worker import HEADER, MAX_MESSAGE, encode_message, write_all

DEFAULT_MEM_LIMIT_MB = 4096
DEFAULT_STARTUP_TIMEOUT = 180.0
#: without a log_dir the temporary log is emptied between runs once larger than this
TEMP_LOG_MAX_BYTES = 64 * 2 ** 20
#: at most this much of a run's stderr is read back (from its start)
RUN_STDERR_MAX = 1 << 20
STDERR_KEEP = 8000

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
    signature   crash only: ``SIGNAL: first fatal line`` (normalised)
    duration    seconds: around the call for pass/invalid (measured in the
                worker); from request to death / deadline for crash/timeout
    exit_code   crash: the worker's exit status (negative = killed by signal)
    signal_name crash: e.g. "SIGABRT"
    stage       invalid: Stage.CALL, or Stage.MATERIALIZE when building the arguments failed
    stderr      crash/timeout: the worker's stderr for this run (last 8000 chars)
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
_NUMBER = re.compile(r"(?<![\w.])\d+(?:\.\d+)?(?![\w.])")


def _normalise(text: str) -> str:
    """Drop what varies between runs of the same bug: addresses, pids,
    and the input-dependent numbers in the message."""
    text = _HEX.sub("0x?", text)
    text = _NUMBER.sub("N", text)
    return " ".join(text.split())[:300]


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


def crash_signature(exit_code: int | None, stderr_text: str) -> str:
    if exit_code is not None and exit_code < 0:
        try:
            head = signal.Signals(-exit_code).name
        except ValueError:
            head = f"signal {-exit_code}"
    else:
        head = f"exit {exit_code}"
    line = fatal_line(stderr_text)
    return f"{head}: {line}" if line else head


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
    """Runs inputs of one framework in an isolated, persistent worker."""

    def __init__(self, framework: str, timeout: float = 10.0,
                 mem_limit_mb: int | None = DEFAULT_MEM_LIMIT_MB, log_dir: str | None = None, *,
                 startup_timeout: float = DEFAULT_STARTUP_TIMEOUT,
                 max_elements: int = DEFAULT_MAX_ELEMENTS, max_bytes: int = DEFAULT_MAX_BYTES,
                 env: dict[str, str] | None = None):
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
        self._tmpdir: tempfile.TemporaryDirectory | None = None
        if log_dir is None:
            self._tmpdir = tempfile.TemporaryDirectory(prefix="acetest-worker-")
            log_dir = self._tmpdir.name
        os.makedirs(log_dir, exist_ok=True)
        self.log_path = os.path.join(log_dir, f"worker-{framework}.log")
        self._proc: subprocess.Popen | None = None
        self._next_id = 0
        self.starts = 0          #: how many workers were started
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
        return self._proc.pid if self._proc is not None else None

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

    def start(self) -> None:
        """Start the worker now (otherwise the first run does) and wait until
        it has imported the framework."""
        if self.closed:
            raise RuntimeError("executor is closed")
        if self._proc is not None and self._proc.poll() is None:
            return
        self._discard_worker()
        offset = self._log_size()
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "acetest_ml.execute.worker", self.framework],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                env=self._env(), preexec_fn=self._limits, start_new_session=True,
                close_fds=True, bufsize=0)
        self.starts += 1
        msg = self._read_reply(time.monotonic() + self.startup_timeout)
        if not isinstance(msg, dict) or not msg.get("ready"):
            what = "did not become ready" if msg is _TIMEOUT else "exited during start-up"
            code = self._kill()
            tail = self._log_text(offset).strip().splitlines()[-1:] or ["(no output)"]
            where = "" if self._tmpdir is not None else f" [log: {self.log_path}]"
            raise WorkerStartError(f"{self.framework} worker {what} (exit {code}): "
                                   f"{tail[0].strip()}{where}")
        self.worker_version = msg.get("version")

    def close(self) -> None:
        """Stop the worker and remove the temporary log directory, if any.
        The worker holds no state worth a clean shutdown (and TF takes
        seconds to exit), so its process group is simply killed."""
        if self.closed:
            return
        self.closed = True
        self._kill()
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None

    def _kill(self) -> int | None:
        """SIGKILL the worker's process group; returns its exit status."""
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        code = proc.wait()
        for f in (proc.stdin, proc.stdout):
            try:
                if f is not None:
                    f.close()
            except OSError:
                pass
        return code

    def _discard_worker(self) -> None:
        if self._proc is not None:
            self._kill()

    # -- log file --------------------------------------------------------------
    def _log_size(self) -> int:
        try:
            return os.path.getsize(self.log_path)
        except OSError:
            return 0

    def _log_text(self, offset: int) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                data = f.read(RUN_STDERR_MAX)
        except OSError:
            return ""
        return data.decode("utf-8", errors="replace")

    # -- protocol --------------------------------------------------------------
    def _read_reply(self, deadline: float) -> Any:
        """A message from the worker, None at end of file, or _TIMEOUT."""
        assert self._proc is not None and self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
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
                chunk = os.read(fd, min(need - len(buf), 1 << 20))
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
        offset = self._log_size()
        request = encode_message({"id": rid, "ai": ai.to_json(), "plan": plan})
        t0 = time.monotonic()
        try:
            assert self._proc is not None and self._proc.stdin is not None
            write_all(self._proc.stdin.fileno(), request)
            reply = self._read_reply(t0 + limit)
        except BrokenPipeError:
            reply = None
        elapsed = time.monotonic() - t0
        if reply is _TIMEOUT:
            self._kill()
            return RunResult(outcome=Outcome.TIMEOUT, duration=elapsed,
                             message=f"no reply within {limit:g}s; worker killed",
                             stderr=self._log_text(offset)[-STDERR_KEEP:] or None)
        if reply is None:
            code = self._kill()
            text = self._log_text(offset)
            sig = _signal_name(code)
            return RunResult(outcome=Outcome.CRASH, duration=elapsed, exit_code=code, signal_name=sig,
                             signature=crash_signature(code, text),
                             message=f"worker died ({sig or f'exit {code}'})",
                             stderr=text[-STDERR_KEEP:] or None)
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
