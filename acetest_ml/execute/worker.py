"""The worker: ``python -m acetest_ml.execute.worker <framework>``.

A persistent child process that imports one framework once, limits it to one
thread and then serves requests until its stdin closes.

Protocol (both directions): a 4-byte big-endian length, then that many bytes
of UTF-8 JSON.

- after start-up the worker sends ``{"ready": true, "framework", "version", "pid"}``
  (a worker forked by the zygote first runs one warm-up op, see ``workers``)
- request:  ``{"id": n, "ai": <AbstractInput JSON>, "plan": <plan_call dict>}``
- reply:    ``{"id": n, "outcome": "pass", "duration": s}`` or
  ``{"id": n, "outcome": "invalid", "exc_type": "<module.Class>",
  "message": "<first 2000 chars>", "stage": "materialize"|"call", "duration": s}`` or,
  when building the arguments failed inside acetest-ml's own code (a bug of
  ours, not the framework's verdict), ``{"id": n, "outcome": "internal",
  "exc_type", "message", "where": "<file>:<line>", "stage": "materialize", ...}``

Replies go to a private duplicate of the original stdout; fd 1 is pointed at
stderr before the framework is imported, so anything the framework prints
cannot corrupt the protocol. Calls are built from the structured request
(attribute lookup from a whitelisted root, then a normal call); nothing is
exec'd or eval'd.
"""
from __future__ import annotations

import faulthandler
import json
import os
import struct
import sys
import time
from typing import Any

from ..outcome import Outcome, Stage

HEADER = struct.Struct(">I")
MAX_MESSAGE = 1 << 30
MESSAGE_CHARS = 2000


def encode_message(obj: Any) -> bytes:
    data = json.dumps(obj, separators=(",", ":")).encode("utf-8")
    return HEADER.pack(len(data)) + data


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def read_exact(fd: int, n: int) -> bytes | None:
    """``n`` bytes from ``fd``, or None on end of file."""
    chunks = []
    while n:
        chunk = os.read(fd, min(n, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def read_message(fd: int) -> Any:
    head = read_exact(fd, HEADER.size)
    if head is None:
        return None
    (length,) = HEADER.unpack(head)
    if length > MAX_MESSAGE:
        raise ValueError(f"message of {length} bytes is too large")
    body = read_exact(fd, length)
    if body is None:
        return None
    return json.loads(body.decode("utf-8"))


def exception_type(e: BaseException) -> str:
    return f"{type(e).__module__}.{type(e).__qualname__}"


def exception_message(e: BaseException) -> str:
    try:
        return str(e)[:MESSAGE_CHARS]
    except Exception:  # a broken __str__ must not kill the worker
        return f"<unprintable {type(e).__name__}>"


_OUR_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def internal_location(e: BaseException) -> str | None:
    """``<file>:<line>`` when ``e`` is a bug of acetest-ml's own code: raised
    in one of its modules (innermost frame) and not one of the refusals it
    raises on purpose (``UserError``: an input that does not fit its spec,
    a name it may not call). None when the exception is the framework's (or
    numpy's) verdict on the value."""
    from ..errors import UserError
    if isinstance(e, UserError):
        return None
    tb = e.__traceback__
    last = None
    while tb is not None:
        last, tb = tb, tb.tb_next
    if last is None:
        return None
    path = os.path.abspath(last.tb_frame.f_code.co_filename)
    if not path.startswith(_OUR_PACKAGE):
        return None
    return f"acetest_ml/{path[len(_OUR_PACKAGE):]}:{last.tb_lineno}"


def build_call(adapter, ai, plan: dict):
    """-> (callable, args, kwargs) for ``plan`` (materialize.plan_call), the
    tensors materialised with the input's value seed. This is how every run
    is called; tests call it too."""
    fn = adapter.resolve(plan["target"])
    args = [adapter.convert(ai.args[n], ai.value_seed, n) for n in plan["positional"]]
    kwargs = {n: adapter.convert(ai.args[n], ai.value_seed, n) for n in plan["keyword"]}
    kwargs.update({n: None for n in plan.get("none", [])})
    return fn, args, kwargs


def handle(adapter, request: dict) -> dict:
    """Run one request; returns the reply (without the id)."""
    from ..model import AbstractInput

    stage = Stage.MATERIALIZE
    start = time.perf_counter()
    duration = 0.0
    try:
        ai = AbstractInput.from_json(request["ai"])
        fn, args, kwargs = build_call(adapter, ai, request["plan"])
        stage = Stage.CALL
        start = time.perf_counter()
        try:
            result = fn(*args, **kwargs)
            adapter.force(result)
        finally:
            duration = time.perf_counter() - start
        del result, args, kwargs
    except Exception as e:
        reply = {"outcome": Outcome.INVALID.value, "exc_type": exception_type(e),
                 "message": exception_message(e), "stage": stage.value, "duration": duration}
        if stage == Stage.MATERIALIZE:
            reply["duration"] = time.perf_counter() - start
            where = internal_location(e)
            if where is not None:
                reply.update(outcome=Outcome.INTERNAL.value, where=where)
        return reply
    return {"outcome": Outcome.PASS.value, "duration": duration}


def _redirect_stdout() -> int:
    """Point fd 1 at stderr (framework prints cannot corrupt the protocol);
    returns a private duplicate of the original stdout."""
    reply_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return reply_fd


def _crash_reports() -> None:
    """On a fatal signal: faulthandler's Python traceback, then the native
    stack (for the signature) and the crash notice to the supervisor, on
    stderr (faulthandler chains to the handler installed before it)."""
    from .native_stack import install
    install()
    faulthandler.enable(file=sys.stderr, all_threads=False)


def _ready(adapter, framework: str, version: str) -> bytes:
    return encode_message({"ready": True, "framework": framework, "version": version,
                           "pid": os.getpid()})


#: the request being served (what a crash notice names)
_CURRENT: dict = {"id": None}


def _crash_notice(signum: int) -> bytes:
    """Sent by the fatal-signal handler, after the stack: this run crashed
    with ``signum``; the supervisor need not wait for the process to go."""
    return encode_message({"id": _CURRENT["id"], "outcome": "crash", "signal": signum})


def _serve_loop(adapter, in_fd: int, out_fd: int) -> int:
    from .native_stack import set_notice
    set_notice(out_fd, _crash_notice)
    while True:
        request = read_message(in_fd)
        if request is None or request.get("op") == "exit":
            return 0
        rid = request.get("id")
        _CURRENT["id"] = rid
        sys.stderr.write(f"--- acetest-ml run {rid} {request.get('plan', {}).get('target')}\n")
        sys.stderr.flush()
        reply = handle(adapter, request)
        reply["id"] = rid
        sys.stderr.flush()
        write_all(out_fd, encode_message(reply))


def serve(framework: str) -> int:
    """A worker started on its own: import, say ready, serve stdin."""
    reply_fd = _redirect_stdout()
    _crash_reports()

    from .frameworks import get_adapter

    adapter = get_adapter(framework)
    version = adapter.setup()
    write_all(reply_fd, _ready(adapter, framework, version))
    return _serve_loop(adapter, 0, reply_fd)


#: a tiny request per framework that a forked worker serves to itself before
#: it says ready (primed: every lazy import and first-call cost of the
#: request path is paid while it waits as the spare, not by the first run)
_PRIME = {"tf": ("tf.raw_ops.AddV2", ("x", "y")), "torch": ("torch.ops.aten.add.Tensor", ("self", "other"))}


def _prime_request(framework: str) -> dict | None:
    from ..materialize import plan_call
    from ..model import AbstractInput, ApiSpec, ArgSpec, TensorDesc
    if framework not in _PRIME:
        return None
    name, args = _PRIME[framework]
    spec = ApiSpec(name, framework, [ArgSpec(a, "tensor") for a in args])
    ai = AbstractInput(name, {a: TensorDesc("float32", (2, 3)) for a in args}, value_seed=1)
    return {"id": 0, "ai": ai.to_json(), "plan": plan_call(spec, ai)}


def _forked_child(adapter, framework: str, version: str, ctl, sock_fd: int, log_fd: int,
                  prime: dict | None) -> int:
    """In a child of the zygote: own session, own log, warm up and prime,
    then serve."""
    os.setsid()  # its own process group: the supervisor kills it with killpg
    ctl.close()
    os.dup2(log_fd, 2)
    os.dup2(2, 1)
    os.close(log_fd)
    adapter.warm_up()
    if prime is not None:
        handle(adapter, prime)
    write_all(sock_fd, _ready(adapter, framework, version))
    return _serve_loop(adapter, sock_fd, sock_fd)


def zygote(framework: str, ctl_fd: int) -> int:
    """The fork server (see ``workers.Zygote``): imports the framework, runs
    no op, forks a worker per request and reports children's exit status."""
    import socket

    _redirect_stdout()
    _crash_reports()  # inherited by every forked worker
    ctl = socket.socket(fileno=ctl_fd)

    from .frameworks import get_adapter

    adapter = get_adapter(framework)
    version = adapter.setup()
    prime = _prime_request(framework)  # imports the request path's modules once, here
    exited: dict[int, int | None] = {}  # children reaped before anyone asked
    forget: set[int] = set()            # children nobody will ask about

    def reap() -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid in forget:
                forget.discard(pid)
            else:
                exited[pid] = os.waitstatus_to_exitcode(status)

    ctl.send(json.dumps({"ready": True, "framework": framework, "version": version,
                         "pid": os.getpid()}).encode())
    while True:
        try:
            data, fds, _flags, _addr = socket.recv_fds(ctl, 1 << 16, 4)
        except OSError:
            return 0
        if not data:  # the supervisor is gone
            return 0
        request = json.loads(data.decode("utf-8"))
        op = request.get("op")
        reap()
        if op == "reap":  # a child the supervisor will not wait for: no reply
            pid = int(request["pid"])
            if exited.pop(pid, "running") == "running":
                forget.add(pid)
            continue
        if op == "fork" and len(fds) == 2:
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                code = 70
                try:
                    code = _forked_child(adapter, framework, version, ctl, fds[0], fds[1], prime)
                finally:
                    try:
                        sys.stderr.flush()
                    finally:
                        os._exit(code)
            for fd in fds:
                os.close(fd)
            reply: dict = {"pid": pid}
        elif op == "wait":
            pid = int(request["pid"])
            if pid in exited:
                reply = {"status": exited.pop(pid)}
            else:
                try:
                    _pid, status = os.waitpid(pid, 0)
                    reply = {"status": os.waitstatus_to_exitcode(status)}
                except ChildProcessError:
                    reply = {"status": None}
        else:
            for fd in fds:
                os.close(fd)
            reply = {"error": f"unknown request {op!r}"}
        ctl.send(json.dumps(reply).encode())


def _scratch_dir() -> str:
    """Ops under test write files named by their inputs (WriteFile, Save,
    summary writers, ...): relative names must land in a private folder,
    never in the folder the user started the campaign from."""
    import tempfile

    path = tempfile.mkdtemp(prefix="acetest-ml-worker-")
    os.chdir(path)
    return path


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 3 and argv[1] == "--zygote" and argv[2].isdigit():
        mode = "zygote"
    elif len(argv) == 1:
        mode = "serve"
    else:
        sys.stderr.write("usage: python -m acetest_ml.execute.worker <framework> [--zygote FD]\n")
        return 2
    scratch = _scratch_dir()
    pid = os.getpid()
    try:
        return zygote(argv[0], int(argv[2])) if mode == "zygote" else serve(argv[0])
    finally:
        if os.getpid() == pid:  # not in a forked worker returning through here
            import shutil
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
