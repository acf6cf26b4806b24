"""SQLite results store: one row per generated candidate, append-only.

A candidate that ran has an ``outcome`` (pass / invalid / crash / timeout);
one that the filter discarded has ``decision = 'discard'`` and no outcome; one
refused by the size caps or not buildable has outcome ``skipped``; one whose
call our own conversion code failed to build has outcome ``internal``
(:mod:`acetest_ml.outcome` names them all). Every row is committed as
it is written (WAL journal), so a killed campaign loses nothing it recorded;
``(api, seed, idx)`` is unique, so a resumed campaign cannot record a
candidate twice.
"""
from __future__ import annotations

import json
import os
import sqlite3
import time
from dataclasses import dataclass
from typing import Iterator, Optional

from .errors import UserError
from .model import AbstractInput
from .outcome import ALL, EXECUTED, Decision, Outcome, sql_list

DB_NAME = "runs.sqlite"
SCHEMA_VERSION = 1

EXECUTED_OUTCOMES = EXECUTED
_EXECUTED_SQL = sql_list(EXECUTED)
_OUTCOMES = {o.value: o for o in Outcome}
_DECISIONS = {d.value: d for d in Decision}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS candidates (
    id INTEGER PRIMARY KEY,
    api TEXT NOT NULL,
    seed INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    input TEXT NOT NULL,
    score REAL,
    decision TEXT NOT NULL,
    outcome TEXT,
    exc_type TEXT,
    message TEXT,
    signature TEXT,
    duration REAL,
    created REAL NOT NULL,
    UNIQUE (api, seed, idx)
);
CREATE INDEX IF NOT EXISTS candidates_api ON candidates (api, outcome);
CREATE TABLE IF NOT EXISTS api_status (
    api TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    reason TEXT,
    info TEXT,
    updated REAL NOT NULL
);
"""


@dataclass
class Record:
    api: str
    seed: int
    idx: int
    input: AbstractInput
    score: Optional[float]
    decision: str
    outcome: Optional[Outcome]
    exc_type: Optional[str]
    message: Optional[str]
    signature: Optional[str]
    duration: Optional[float]

    @property
    def executed(self) -> bool:
        return self.outcome in EXECUTED_OUTCOMES


class Store:
    """The results database of one campaign folder (``<out>/runs.sqlite``)."""

    def __init__(self, out_dir: str, *, create: bool = True):
        self.out_dir = out_dir
        self.path = os.path.join(out_dir, DB_NAME)
        if not create and not os.path.exists(self.path):
            raise UserError(f"no results store at {self.path} (is {out_dir} a campaign folder?)")
        os.makedirs(out_dir, exist_ok=True)
        try:
            self.db = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(_SCHEMA)
            self.db.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)",
                            (str(SCHEMA_VERSION),))
        except sqlite3.DatabaseError as e:
            raise UserError(f"results store {self.path} is not a usable SQLite database: {e}") from None

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- meta -----------------------------------------------------------------
    def get_meta(self, key: str, default=None):
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    def set_meta(self, key: str, value) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, json.dumps(value)))

    # -- writing --------------------------------------------------------------
    def add(self, api: str, seed: int, idx: int, ai: AbstractInput, *, decision: str = Decision.NONE,
            score: float | None = None, outcome: str | None = None, exc_type: str | None = None,
            message: str | None = None, signature: str | None = None,
            duration: float | None = None) -> None:
        self.add_many([(api, seed, idx, ai.dumps(), score, decision, outcome, exc_type, message,
                        signature, duration)])

    def add_many(self, rows: list[tuple]) -> None:
        """rows: (api, seed, idx, input_json, score, decision, outcome, exc_type,
        message, signature, duration); written in one transaction."""
        if not rows:
            return
        now = time.time()
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.executemany(
                "INSERT OR IGNORE INTO candidates(api, seed, idx, input, score, decision, outcome,"
                " exc_type, message, signature, duration, created) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                [r + (now,) for r in rows])
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def set_api_status(self, api: str, status: str, reason: str | None = None,
                       info: dict | None = None) -> None:
        self.db.execute("INSERT OR REPLACE INTO api_status(api, status, reason, info, updated)"
                        " VALUES (?,?,?,?,?)", (api, status, reason, json.dumps(info or {}), time.time()))

    # -- reading --------------------------------------------------------------
    def next_index(self, api: str, seed: int) -> int:
        row = self.db.execute("SELECT MAX(idx) FROM candidates WHERE api = ? AND seed = ?",
                              (api, seed)).fetchone()
        return 0 if row[0] is None else int(row[0]) + 1

    def count_executed(self, api: str, seed: int | None = None) -> int:
        q = "SELECT COUNT(*) FROM candidates WHERE api = ? AND outcome IN " + _EXECUTED_SQL
        args: tuple = (api,)
        if seed is not None:
            q += " AND seed = ?"
            args += (seed,)
        return int(self.db.execute(q, args).fetchone()[0])

    def count_decision(self, api: str, seed: int, decision: str) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM candidates WHERE api = ? AND seed = ? AND decision = ?",
                                   (api, seed, decision)).fetchone()[0])

    def count_outcome(self, api: str, seed: int, outcome: str) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM candidates WHERE api = ? AND seed = ? AND outcome = ?",
                                   (api, seed, outcome)).fetchone()[0])

    def apis(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT DISTINCT api FROM candidates ORDER BY api")]

    def api_statuses(self) -> dict[str, dict]:
        out = {}
        for api, status, reason, info in self.db.execute(
                "SELECT api, status, reason, info FROM api_status ORDER BY api"):
            out[api] = {"status": status, "reason": reason, "info": json.loads(info or "{}")}
        return out

    def records(self, api: str | None = None, *, executed_only: bool = False,
                seed: int | None = None) -> Iterator[Record]:
        q = ("SELECT api, seed, idx, input, score, decision, outcome, exc_type, message, signature,"
             " duration FROM candidates WHERE 1=1")
        args: list = []
        if api is not None:
            q += " AND api = ?"
            args.append(api)
        if seed is not None:
            q += " AND seed = ?"
            args.append(seed)
        if executed_only:
            q += " AND outcome IN " + _EXECUTED_SQL
        q += " ORDER BY api, seed, idx"
        for row in self.db.execute(q, args).fetchall():
            outcome = _OUTCOMES.get(row[6], row[6])
            yield Record(row[0], row[1], row[2], AbstractInput.loads(row[3]), row[4],
                         _DECISIONS.get(row[5], row[5]), outcome, *row[7:])

    def outcome_counts(self, api: str) -> dict[str, int]:
        out = {k.value: 0 for k in ALL}
        for outcome, n in self.db.execute(
                "SELECT outcome, COUNT(*) FROM candidates WHERE api = ? AND outcome IS NOT NULL"
                " GROUP BY outcome", (api,)):
            out[outcome] = n
        return out
