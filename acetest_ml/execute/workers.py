"""Worker processes as the supervisor sees them, and the fork server behind
the warm spare.

Two ways to get a worker:

- ``spawn_worker``: ``python -m acetest_ml.execute.worker <fw>`` started
  cold; it imports the framework itself (seconds: TF takes 5-15 s here).
- ``Zygote``: ``python -m acetest_ml.execute.worker <fw> --zygote FD``
  imports the framework once and never runs an op; ``Zygote.fork`` makes it
  fork a child that warms up and primes itself (one tiny op, then one tiny
  request through the whole request path, so the framework's runtime and
  every lazy import are ready) and then serves requests like a spawned
  worker. Forking takes milliseconds, so the supervisor keeps forked
  children as warm spares (two by default). A fork request need not wait for
  its reply (``fork(wait=False)``): the child's pid is read from the control
  channel when it is first needed, so asking for a new spare costs the
  supervisor a ``sendmsg``.
  The zygote holds no framework threads or runtime state when it forks (only
  the module imports), which is what makes the fork safe.

Both kinds expose the same handle (``send_fd``, ``recv_fd``, ``pid``,
``log_path``, ``kill()``). The forked child is not our child but the
zygote's: its exit status comes back through the zygote (``wait``), so a
crash is still labelled with its signal; a worker whose signal is known
already (its crash notice said it) is only reaped (``reap``: no reply).

Control channel to the zygote: a SOCK_SEQPACKET socket pair; one JSON object
per packet; the fork request carries the child's socket and log file
descriptor (SCM_RIGHTS).
"""
from __future__ import annotations

import collections
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from typing import Callable

_CTL_MAX = 1 << 16


class WorkerGone(RuntimeError):
    """The zygote died or stopped answering."""


def _killpg(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


class PopenWorker:
    """A worker started cold as our own child process."""

    def __init__(self, proc: subprocess.Popen, log_path: str):
        self.proc = proc
        self.pid = proc.pid
        self.log_path = log_path
        assert proc.stdin is not None and proc.stdout is not None  # started with PIPEs
        self.send_fd = proc.stdin.fileno()
        self.recv_fd = proc.stdout.fileno()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self, wait: bool = True) -> int | None:
        """SIGKILL the worker's process group; returns its exit status (our
        own child: always waited for)."""
        if self.proc.poll() is None:
            _killpg(self.pid)
        code = self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                if f is not None:
                    f.close()
            except OSError:
                pass
        return code


def spawn_worker(framework: str, log_path: str, env: dict, preexec: Callable[[], None]) -> PopenWorker:
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "acetest_ml.execute.worker", framework],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, env=env,
            preexec_fn=preexec, start_new_session=True, close_fds=True, bufsize=0)
    return PopenWorker(proc, log_path)


class ForkedWorker:
    """A worker forked by the zygote; one stream socket carries both ways.
    Its pid is known once the zygote's reply to the fork request is read
    (``Zygote.settle``), at the latest when ``pid`` is asked for."""

    def __init__(self, zygote: "Zygote", pid: int | None, sock: socket.socket, log_path: str):
        self.zygote = zygote
        self._pid = pid
        self.sock = sock
        self.log_path = log_path
        self.send_fd = self.recv_fd = sock.fileno()
        self._dead = False
        self.fork_failed: str | None = None  #: the zygote refused or died before forking it

    @property
    def pid(self) -> int | None:
        if self._pid is None and self.fork_failed is None:
            try:
                self.zygote.settle()
            except WorkerGone:
                pass
        return self._pid

    def alive(self) -> bool:
        return not self._dead

    def kill(self, wait: bool = True) -> int | None:
        """SIGKILL the worker (its own session) and collect its exit status
        from the zygote (None when the zygote is gone, or without ``wait``:
        then the zygote reaps it by itself)."""
        if self._dead:
            return None
        self._dead = True
        pid = self.pid
        if pid is not None:
            _killpg(pid)
        try:
            self.sock.close()  # a child never forked or unreachable reads end of file and exits
        except OSError:
            pass
        if pid is None:
            return None
        if not wait:
            self.zygote.reap(pid)
            return None
        return self.zygote.wait(pid)


class Zygote:
    """The fork server of one framework."""

    def __init__(self, framework: str, log_path: str, env: dict, preexec: Callable[[], None]):
        self.framework = framework
        self.log_path = log_path
        self.env = env
        self.preexec = preexec
        self.proc: subprocess.Popen | None = None
        self.ctl: socket.socket | None = None
        self.version: str | None = None
        #: forked workers whose pid reply has not been read yet (replies come in order)
        self._pending: collections.deque[ForkedWorker] = collections.deque()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float) -> dict | None:
        """Start the zygote and wait until it has imported the framework.
        Returns its ready message, or None (then it is gone: ``exited`` says
        whether it died by itself, ``last_exit`` holds its exit status)."""
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "acetest_ml.execute.worker", self.framework,
                 "--zygote", str(child.fileno())],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=self.env,
                preexec_fn=self.preexec, start_new_session=True, close_fds=True,
                pass_fds=(child.fileno(),))
        child.close()
        self.ctl = parent
        deadline = time.monotonic() + timeout
        msg = self._recv(deadline)
        if not isinstance(msg, dict) or not msg.get("ready"):
            self.exited = time.monotonic() < deadline  # end of file before the deadline
            self.last_exit = self.close()
            return None
        self.version = msg.get("version")
        return msg

    def _recv(self, deadline: float) -> dict | None:
        """The next control reply; None on end of file or at the deadline."""
        if self.ctl is None:
            return None
        fd = self.ctl.fileno()
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            if poller.poll(max(1, int(remaining * 1000 + 0.999))):
                break
        try:
            data = self.ctl.recv(_CTL_MAX)
        except OSError:
            return None
        if not data:
            return None
        return json.loads(data.decode("utf-8"))

    def fork(self, log_path: str, timeout: float = 30.0, wait: bool = True) -> ForkedWorker:
        """A new child writing its stderr to ``log_path``; it warms up on its
        own and sends its ready message on its socket. Without ``wait`` the
        zygote's reply (the pid) is read later (``settle``)."""
        if not self.alive() or self.ctl is None:
            raise WorkerGone("zygote not running")
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        log_fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            socket.send_fds(self.ctl, [b'{"op":"fork"}'], [theirs.fileno(), log_fd])
        except OSError as e:
            ours.close()
            raise WorkerGone(f"zygote unreachable: {e}") from None
        finally:
            theirs.close()
            os.close(log_fd)
        worker = ForkedWorker(self, None, ours, log_path)
        self._pending.append(worker)
        if wait:
            self.settle(timeout)
            if worker.fork_failed is not None:
                raise WorkerGone(worker.fork_failed)
        return worker

    def settle(self, timeout: float = 30.0) -> None:
        """Read the replies to the fork requests sent so far. Raises
        WorkerGone when the zygote does not answer (every pending worker
        is then marked as not forked)."""
        deadline = time.monotonic() + timeout
        while self._pending:
            reply = self._recv(deadline)
            worker = self._pending.popleft()
            if not reply or "pid" not in reply:
                worker.fork_failed = f"zygote did not fork: {reply!r}"
                for w in self._pending:
                    w.fork_failed = worker.fork_failed
                self._pending.clear()
                raise WorkerGone(worker.fork_failed)
            worker._pid = int(reply["pid"])

    def wait(self, pid: int, timeout: float = 30.0) -> int | None:
        """Exit status of a (killed or dead) child, as Popen.returncode."""
        if not self.alive() or self.ctl is None:
            return None
        try:
            self.settle(timeout)
            self.ctl.send(json.dumps({"op": "wait", "pid": pid}).encode())
        except (OSError, WorkerGone):
            return None
        reply = self._recv(time.monotonic() + timeout)
        if not reply:
            return None
        return reply.get("status")

    def reap(self, pid: int) -> None:
        """Let the zygote reap a killed child without reporting its status."""
        if not self.alive() or self.ctl is None:
            return
        try:
            self.ctl.send(json.dumps({"op": "reap", "pid": pid}).encode())
        except OSError:
            pass

    def close(self) -> int | None:
        proc, self.proc = self.proc, None
        for w in self._pending:
            w.fork_failed = "zygote closed"
        self._pending.clear()
        if self.ctl is not None:
            try:
                self.ctl.close()
            except OSError:
                pass
            self.ctl = None
        if proc is None:
            return None
        if proc.poll() is None:
            _killpg(proc.pid)
        return proc.wait()
