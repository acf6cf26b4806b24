"""The candidate stream of one API, drawn in a process of its own.

Z3's choices depend on more than the solver's seed and its context: a
process that has already solved other APIs' constraints gets other models
for the same query. So the stream of an API would depend on which APIs ran
before it in the same process, which differs between ``--jobs 1``,
``--jobs 2`` and Ray. Each API's constraint sets are therefore built and
sampled in a fresh child, forked from a clean server process that has
imported the solver modules and never solved anything: the same
(config, API, seed) gives the same candidates wherever the API runs.

The child talks over a pipe: it answers ``("draw", n)`` with the next ``n``
candidates (as JSON strings), cut short by a failure it then names, and exits
when the pipe closes.

Prefetch (``cfg.prefetch``, 16): a thread of the campaign process keeps that
many candidates drawn ahead, refilling the buffer in one round trip, while runs execute, so drawing
overlaps running. It changes nothing in the order: the stream has one
consumer, ``take(n)`` hands out the next ``n`` in order, and a draw that
fails (no solution left, our error) is raised by the ``take`` whose ``n``
candidates it falls into, with the candidates before it in that call
dropped, as without prefetch. Candidates drawn but never taken are not
recorded, so a resumed campaign draws them again. With ``learn_rules`` each
run can change the stream, so the campaign asks for each take after the
runs before it are observed; the child then draws the current rule set's
next candidates ahead between requests instead (learn/sampling.py).
"""
from __future__ import annotations

import collections
import multiprocessing as mp
import threading
from typing import Any, Optional

from .errors import UserError
from .model import AbstractInput, ApiSpec

#: modules the fork server imports once, so each child starts at once
PRELOAD = ["acetest_ml.model", "acetest_ml.solve.sampler", "acetest_ml.solve.registry",
           "acetest_ml.solve.rules", "acetest_ml.solve.acetest", "acetest_ml.spec.acetest_data",
           "acetest_ml.campaign", "acetest_ml.learn.warm"]

_CTX_LOCK = threading.Lock()
_CTX: Any = None


class GenerationError(Exception):
    """Our generation code failed for this API (the message says how)."""


def _context():
    global _CTX
    with _CTX_LOCK:
        if _CTX is None:
            ctx = mp.get_context("forkserver")
            ctx.set_forkserver_preload(PRELOAD)
            _CTX = ctx
        return _CTX


def _reason(e: BaseException) -> str:
    msg = " ".join(str(e).split())
    return f"{type(e).__name__}: {msg}"[:500]


def models_per_set(cfg, notes: dict, n_problems: int) -> Optional[int]:
    """ACETest's scheme for ACETest constraints: a few solver models per
    constraint set, reused with fresh random fills (budget / sets / 2 each,
    at least 2); None (a new model per draw) for registry constraints."""
    if notes.get("constraints") != "acetest":
        return None
    return max(2, cfg.budget // (2 * n_problems))


def lagged(cfg) -> bool:
    """LAG: a ``--learn-rules`` campaign without a classifier runs one run
    behind the learner. Its candidates come one at a time; candidate ``j``
    is handed out before run ``j - 1`` is fed to the learner (and after
    every run before it), so the learner's work on a run overlaps the next
    run's execution instead of waiting between them; a rule learned from
    run ``j - 1`` applies from candidate ``j + 1`` on. The order is fixed by
    the positions alone, so the stream stays a function of the seed and
    the outcomes, and ``replay(lag=True)`` rebuilds it (``--resume``). With
    a classifier the campaign scores batches and drops the rest of a batch
    a rule change makes stale, which needs the learner's answer at once."""
    return bool(getattr(cfg, "learn_rules", False)) and not getattr(cfg, "ml_filter", None)


def _serve(conn, cfg, api: str, spec: Optional[ApiSpec], start: int) -> None:
    from .campaign import api_seed, resolve
    from .solve.sampler import NoSolutionError, Sampler
    try:
        try:
            spec, problems, notes = resolve(cfg, api, spec)
        except UserError as e:
            conn.send(("skip", str(e)))
            return
        seed = api_seed(cfg.seed, spec.name)
        per_set = models_per_set(cfg, notes, len(problems))
        store = None
        sampler: Any
        if getattr(cfg, "learn_rules", False):
            # learned rules (acetest_ml/learn): rebuilt from the recorded runs
            from .learn import learning_sampler
            from .store import Store
            store = Store(cfg.out)
            sampler = learning_sampler(cfg, spec, problems, notes, seed, per_set, store)
        else:
            sampler = Sampler(problems, seed, models_per_set=per_set, cheap=getattr(cfg, "cheap", True))
        # one run behind (``lag``): see LAG
        lag = store is not None and lagged(cfg)
        pending: Optional[tuple] = None  # a run fed to the learner after the next hand-out
        try:
            if store is not None:
                pending = sampler.replay(store.records(spec.name, seed=seed), lag=lag)
            else:
                for _ in range(start):  # replay what is recorded (a resumed campaign)
                    sampler.next()
        except NoSolutionError as e:
            conn.send(("skip", f"{spec.name}: {e}"))
            return
        conn.send(("ready", spec, notes))
        # learned rules: the rule set's next candidates drawn while the
        # campaign runs the last ones (the stream is unchanged: see
        # learn/sampling.py), at most ``ahead`` of them, and only while no
        # request waits
        ahead = int(getattr(cfg, "prefetch", 0) or 0)
        draw_ahead = getattr(sampler, "prefetch", None) if ahead > 0 else None
        from .solve.registry import spare_context

        def feed_pending() -> None:  # the run held back (LAG), after a hand-out
            nonlocal pending
            if pending is not None:
                sampler.feed(pending)
                pending = None
        while True:
            if draw_ahead is not None:
                while not conn.poll() and (spare_context() or draw_ahead(ahead)):
                    pass
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                return
            if msg[0] == "observe" and lag:
                # hand out the next candidate first, then feed this run to
                # the learner while the campaign executes that candidate
                feed_pending()
                pending = (AbstractInput.loads(msg[1]), msg[2], msg[3], msg[6] if len(msg) > 6 else None)
                n = msg[5] if len(msg) > 5 else 0
                given: Any = None
                if n:
                    try:
                        given = ("ok", [sampler.next().dumps() for _ in range(n)])
                    except NoSolutionError as e:
                        given = ("nosolution", str(e))
                conn.send(("observed", False, given))
                if n:
                    feed_pending()
                continue
            if msg[0] == "observe":  # an executed run, for the rule learner
                changed = sampler.observe(AbstractInput.loads(msg[1]), msg[2], msg[3],
                                          signature=msg[6] if len(msg) > 6 else None)
                # the campaign's next take, drawn now when it is sure to come
                # (the run ended its batch, or changed the rule set so the
                # rest of the batch is dropped): one round trip, not two
                last, n = (msg[4], msg[5]) if len(msg) > 5 else (False, 0)
                drawn: Any = None
                if n and (changed or last):
                    try:
                        drawn = ("ok", [sampler.next().dumps() for _ in range(n)])
                    except NoSolutionError as e:
                        drawn = ("nosolution", str(e))
                    if draw_ahead is not None:
                        ahead = max(ahead, n)
                conn.send(("observed", changed, drawn))
                continue
            if msg[0] == "learned":
                feed_pending()  # the summary counts every run
                conn.send(("learned", sampler.info() if hasattr(sampler, "info") else {}))
                continue
            if msg[0] != "draw":
                return
            # the next n candidates, up to the failure that stopped the draw, if any
            got: list = []
            failure: Any = None
            if draw_ahead is not None:
                ahead = max(ahead, int(msg[1]))
            try:
                for _ in range(msg[1]):
                    got.append(sampler.next().dumps())
            except NoSolutionError as e:
                failure = ("nosolution", str(e))
            conn.send(("some", got, failure))
            feed_pending()
    except (BrokenPipeError, EOFError):
        return
    except Exception as e:  # our bug: reported against this API, never a traceback
        try:
            conn.send(("error", _reason(e)))
        except OSError:
            pass


class CandidateStream:
    """The seeded candidates of one API from ``start`` on.

    After construction ``status`` is ``ready`` (``spec`` and ``notes`` set),
    ``skip`` (the API cannot run: ``reason``) or ``error`` (our code failed:
    ``reason``). ``take(n)`` raises NoSolutionError when the constraint sets
    run dry and GenerationError when our code fails."""

    def __init__(self, cfg, api: str, spec: Optional[ApiSpec] = None, start: int = 0):
        ctx = _context()
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child, cfg, api, spec, start), daemon=True,
                                name=f"acetest-ml-gen:{api}")
        self.proc.start()
        child.close()
        self.spec: Optional[ApiSpec] = None
        self.notes: dict = {}
        self.reason: Optional[str] = None
        self._lock = threading.Condition()
        self._buffer: collections.deque = collections.deque()  # drawn ahead: AbstractInput or a failure
        self._closing = False
        self._thread: Optional[threading.Thread] = None
        self._ahead: Optional[tuple] = None  # (n, reply) drawn with the last observe
        self._observing: Optional[int] = None  # an observe sent, its reply not read yet (next_n)
        msg = self._recv()
        self.status = msg[0]
        if self.status == "ready":
            self.spec, self.notes = msg[1], msg[2]
            depth = int(getattr(cfg, "prefetch", 0) or 0)
            if depth > 0 and not getattr(cfg, "learn_rules", False):
                self._depth = depth
                self._thread = threading.Thread(target=self._prefetch, daemon=True,
                                                name=f"acetest-ml-prefetch:{api}")
                self._thread.start()
        else:
            self.reason = msg[1]
            self.close()

    def _draw(self, n: int) -> list:
        """``n`` candidates from the child, or [failure] (an exception): a
        take that fails drops the candidates drawn before the failure."""
        drawn = self._draw_some(n)
        return drawn[-1:] if drawn and isinstance(drawn[-1], Exception) else drawn

    def _prefetch(self) -> None:
        while True:
            with self._lock:
                while not self._closing and len(self._buffer) >= self._depth:
                    self._lock.wait()
                if self._closing:
                    return
                k = self._depth - len(self._buffer)
            # the buffer refilled in one round trip: a round trip per candidate
            # costs more than drawing it on a loaded machine
            drawn = self._draw_some(k)
            with self._lock:
                self._buffer.extend(drawn)
                self._lock.notify_all()
                if drawn and isinstance(drawn[-1], Exception):
                    return  # the stream stops at its first failure

    def _draw_some(self, n: int) -> list:
        """Up to ``n`` candidates in order, ending with the failure (an
        exception) that stopped the draw, if one did."""
        try:
            self.conn.send(("draw", n))
        except OSError as e:
            return [GenerationError(f"generator process gone: {e}")]
        msg = self._recv()
        if msg[0] != "some":
            return self._reply(msg)
        out: list = [AbstractInput.loads(x) for x in msg[1]]
        if msg[2] is not None:
            out += self._reply(msg[2])
        return out

    def _recv(self):
        try:
            return self.conn.recv()
        except (EOFError, OSError):
            code = self.proc.exitcode if not self.proc.is_alive() else None
            return ("error", f"generator process ended (exit code {code})")

    def take(self, n: int) -> list[AbstractInput]:
        if self._thread is not None:
            out: list[AbstractInput] = []
            with self._lock:
                while len(out) < n:
                    while not self._buffer:
                        self._lock.wait()
                    x = self._buffer.popleft()
                    self._lock.notify_all()
                    if isinstance(x, Exception):
                        self._buffer.appendleft(x)  # every later take fails the same way
                        raise x
                    out.append(x)
            return out
        ahead, self._ahead = self._ahead, None
        if ahead is not None:
            if ahead[0] != n:  # the caller promised another batch size
                raise GenerationError(f"stream drew {ahead[0]} candidates ahead, {n} taken")
            drawn = self._reply(ahead[1])
        else:
            drawn = self._draw(n)
        if drawn and isinstance(drawn[0], Exception):
            raise drawn[0]
        return drawn

    @staticmethod
    def _reply(msg) -> list:
        from .solve.sampler import NoSolutionError
        if msg[0] == "ok":
            return [AbstractInput.loads(x) for x in msg[1]]
        if msg[0] == "nosolution":
            return [NoSolutionError(msg[1])]
        return [GenerationError(msg[1])]

    def observe(self, ai: AbstractInput, outcome: str, message: Optional[str],
                last: bool = False, next_n: int = 0, signature: Optional[str] = None) -> bool:
        """Feed an executed run to the learner (``--learn-rules``); True when
        it changed the rule set (the rest of a drawn batch is stale).
        ``next_n``: the size of the next ``take`` if it follows at once
        (``last``: this run ends its batch); the child then draws it in the
        same round trip whenever that take is sure to come, and that
        ``take(next_n)`` returns it. ``observe_send`` + ``observe_result``
        do the same in two steps, so the caller can do its own work (commit
        the run) while the learner works."""
        self.observe_send(ai, outcome, message, last=last, next_n=next_n, signature=signature)
        return self.observe_result()

    def observe_send(self, ai: AbstractInput, outcome: str, message: Optional[str],
                     last: bool = False, next_n: int = 0, signature: Optional[str] = None) -> None:
        try:
            self.conn.send(("observe", ai.dumps(), str(outcome), message, bool(last), int(next_n), signature))
        except OSError as e:
            raise GenerationError(f"generator process gone: {e}") from None
        self._observing = int(next_n)

    def observe_result(self) -> bool:
        next_n, self._observing = self._observing, None
        if next_n is None:
            raise GenerationError("observe_result without observe_send")
        msg = self._recv()
        if msg[0] != "observed":
            raise GenerationError(str(msg[1]))
        if len(msg) > 2 and msg[2] is not None:
            self._ahead = (next_n, msg[2])
        return bool(msg[1])

    def learned_info(self) -> dict:
        try:
            self.conn.send(("learned",))
            msg = self._recv()
        except OSError:
            return {}
        return msg[1] if msg[0] == "learned" else {}

    def close(self) -> None:
        thread = getattr(self, "_thread", None)
        if thread is not None:
            with self._lock:
                self._closing = True
                self._lock.notify_all()
            thread.join(timeout=0.5)
            if thread.is_alive():  # waiting for a slow draw: nobody wants it
                self.proc.kill()
                thread.join(timeout=10)
        try:
            self.conn.close()
        except OSError:
            pass
        self.proc.join(timeout=5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(timeout=5)

    def __enter__(self) -> "CandidateStream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
