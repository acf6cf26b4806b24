"""Worker processes as the supervisor sees them, and the fork server behind
the warm spare.

Two ways to get a worker:

- ``spawn_worker``: ``python -m acetest_ml.execute.worker <fw>`` started
  cold; it imports the framework itself (seconds: TF takes 5-15 s here).
- ``Zygote``: ``python -m acetest_ml.execute.worker <fw> --zygote FD``
  imports the framework once and never runs an op; ``Zygote.fork`` makes it
  fork a child that warms up (one tiny op, so the framework's runtime is
  initialised) and then serves requests like a spawned worker. Forking takes
  milliseconds, so the supervisor keeps one forked child as a warm spare.
  The zygote holds no framework threads or runtime state when it forks (only
  the module imports), which is what makes the fork safe.

Both kinds expose the same handle (``send_fd``, ``recv_fd``, ``pid``,
``log_path``, ``kill()``). The forked child is not our child but the
zygote's: its exit status comes back through the zygote (``wait``), so a
crash is still labelled with its signal.

Control channel to the zygote: a SOCK_SEQPACKET socket pair; one JSON object
per packet; the fork request carries the child's socket and log file
descriptor (SCM_RIGHTS).
"""
from __future__ import annotations

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

    def kill(self) -> int | None:
        """SIGKILL the worker's process group; returns its exit status."""
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
    """A worker forked by the zygote; one stream socket carries both ways."""

    def __init__(self, zygote: "Zygote", pid: int, sock: socket.socket, log_path: str):
        self.zygote = zygote
        self.pid = pid
        self.sock = sock
        self.log_path = log_path
        self.send_fd = self.recv_fd = sock.fileno()
        self._dead = False

    def alive(self) -> bool:
        return not self._dead

    def kill(self) -> int | None:
        """SIGKILL the worker (its own session) and collect its exit status
        from the zygote (None when the zygote is gone)."""
        if self._dead:
            return None
        self._dead = True
        _killpg(self.pid)
        try:
            self.sock.close()
        except OSError:
            pass
        return self.zygote.wait(self.pid)


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

    def fork(self, log_path: str, timeout: float = 30.0) -> ForkedWorker:
        """A new child writing its stderr to ``log_path``; it warms up on its
        own and sends its ready message on its socket."""
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
        reply = self._recv(time.monotonic() + timeout)
        if not reply or "pid" not in reply:
            ours.close()
            raise WorkerGone(f"zygote did not fork: {reply!r}")
        return ForkedWorker(self, int(reply["pid"]), ours, log_path)

    def wait(self, pid: int, timeout: float = 30.0) -> int | None:
        """Exit status of a (killed or dead) child, as Popen.returncode."""
        if not self.alive() or self.ctl is None:
            return None
        try:
            self.ctl.send(json.dumps({"op": "wait", "pid": pid}).encode())
        except OSError:
            return None
        reply = self._recv(time.monotonic() + timeout)
        if not reply:
            return None
        return reply.get("status")

    def close(self) -> int | None:
        proc, self.proc = self.proc, None
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
