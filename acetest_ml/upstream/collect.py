"""Record every run of the original ACETest Tester into our results store
(``acetest-ml acetest --collect DIR``, ``ACETEST_ML_COLLECT=DIR``), so that
``acetest-ml train --runs DIR`` trains on upstream's own input distribution.

Each executed run becomes one store row: its AbstractInput (converted from
upstream's argument values), the hook's decision, the outcome read from the
runner's counters and a message: for an invalid run the exception text
upstream appended to ``<api>/invalid.log``, for a crash the worker's exit
status (upstream does not keep the worker's stderr). The spec the inputs were
converted against is stored with the API, so training builds the same
features; the seed column is the hook's seed.
"""
from __future__ import annotations

import os
from typing import Optional

from ..errors import UserError
from ..execute.supervisor import crash_signature
from ..model import AbstractInput, ApiSpec
from ..store import DB_NAME, Store

from .messages import InvalidLog

_STORE_OUTCOMES = {"pass", "invalid", "crash", "timeout", "oom", "unsupported"}


def check_collect_dir(path: str) -> None:
    """A usable store folder, or UserError naming the problem."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise UserError(f"collect folder {path} is a file")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise UserError(f"collect folder {path}: its parent folder does not exist")
    db = os.path.join(path, DB_NAME)
    if os.path.exists(db):
        Store(path).close()  # raises UserError when it is not a store


class Collector:
    """Appends upstream's runs to the store in ``out_dir`` (opened lazily)."""

    def __init__(self, out_dir: str, seed: int):
        self.out_dir = out_dir
        self.seed = int(seed)
        self._store: Optional[Store] = None
        self._next: dict[str, int] = {}
        self._specs: set[str] = set()
        self._log = InvalidLog()
        self.recorded = 0

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store(self.out_dir)
        return self._store

    def mark_log(self, output_dir: Optional[str]) -> None:
        """Remember how far ``<output_dir>/invalid.log`` is, so the next
        invalid run's message is what upstream appends after this point."""
        self._log.mark(output_dir)

    def record(self, spec: Optional[ApiSpec], ai: AbstractInput, outcome: str, decision: str,
               runner=None, score: Optional[float] = None) -> None:
        if outcome not in _STORE_OUTCOMES:
            return
        api = ai.api
        store = self.store
        if api not in self._specs and spec is not None:
            store.set_api_status(api, "collected", "runs of the original ACETest Tester",
                                 {"spec": spec.to_dict(), "source": "acetest-upstream"})
            self._specs.add(api)
        if api not in self._next:
            self._next[api] = store.next_index(api, self.seed)
        output_dir = getattr(runner, "output_dir", None)
        message = signature = exc_type = None
        log_text = self._log.new_text(output_dir)
        if outcome == "invalid":
            message = log_text
            exc_type = "upstream-invalid"
        elif outcome == "crash":
            proc = getattr(runner, "runner_p", None)
            code = getattr(proc, "exitcode", None)
            signature = crash_signature(code, "")
            message = f"worker exit status {code}"
        elif outcome == "timeout":
            message = "timeout"
        store.add(api, self.seed, self._next[api], ai, decision=decision, score=score, outcome=outcome,
                  exc_type=exc_type, message=message, signature=signature)
        self._next[api] += 1
        self.recorded += 1

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None
