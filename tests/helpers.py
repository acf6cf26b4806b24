"""Setup shared by several test files: where the shared data is, reading a
campaign's store, the LSTMBlockCell crash rules, and the upstream stand-in's modules."""
from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import functools
import sqlite3
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Iterator

import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent

#: ACETest's constraint data, shared beside the repository (never copied into it)
ACETEST_DATA = os.environ.get("ACETEST_DATA", str(ROOT.parent / "shared" / "acetest-data"))
needs_acetest_data = pytest.mark.skipif(not os.path.isdir(ACETEST_DATA),
                                        reason="../shared/acetest-data not present")


def broken_data(tmp_path):
    """A copy of the ACETest data whose TileOp constraint files declare a
    32-bit argument variable (ACETest's are 64-bit): with --acetest-extensions
    our constraint code fails on Tile (a z3 sort mismatch in its random
    targets), the other APIs are fine."""
    root = tmp_path / "data"
    shutil.copytree(os.path.join(ACETEST_DATA, "tensorflow"), root / "tensorflow")
    tile = root / "tensorflow" / "constraints" / "TileOp"
    for f in tile.iterdir():
        f.chmod(0o644)
        f.write_text("(declare-fun ARGNAME_input_NAMEEND_DIM () (_ BitVec 32))\n"
                     "(assert (bvuge ARGNAME_input_NAMEEND_DIM #x00000001))\n")
    return str(root)


def query_store(out, sql: str, *params) -> list[tuple]:
    """The rows of one SQL query on ``<out>/runs.sqlite``."""
    db = sqlite3.connect(os.path.join(str(out), "runs.sqlite"))
    try:
        return db.execute(sql, params).fetchall()
    finally:
        db.close()


def candidates(out, columns: str = "api, idx, input, decision, outcome", *,
               where: str = "", order: str = "api, idx") -> list[tuple]:
    """``columns`` of the recorded candidates (optionally ``WHERE where``), in ``order``."""
    sql = f"SELECT {columns} FROM candidates" + (f" WHERE {where}" if where else "")
    return query_store(out, sql + f" ORDER BY {order}")


LSTM_ARGS = ("x", "cs_prev", "h_prev", "w", "wci", "wcf", "wco", "b")


def lstm_block_cell_rules(rank: str = "== 1", **ranks: str) -> str:
    """Rules YAML for LSTMBlockCell: TF 2.21's kernel reads ``dim_size(1)`` of
    x and cs_prev before checking their ranks, so a rank-1 x or cs_prev aborts
    (CHECK failure "d < dims()" in tensor_shape.cc) instead of raising
    InvalidArgumentError, on any CPU. ``rank`` is the rule on each tensor's
    rank (``"== 1"``), ``ranks`` overrides it per tensor (``cs_prev="in (1, 2)"``);
    with every tensor rank 2 the random shapes are rejected."""
    lines = [f"    - {a}.rank {ranks.get(a, rank)}" for a in LSTM_ARGS]
    return "\nrules:\n  tf.raw_ops.LSTMBlockCell:\n" + "\n".join(lines) + "\n"


#: the API of CRASH_RULES
CRASH_API = "tf.raw_ops.LSTMBlockCell"
#: every generated LSTMBlockCell input hits the CHECK failure
CRASH_RULES = lstm_block_cell_rules()

_PROBE = """
import numpy as np, tensorflow as tf
a = lambda: tf.constant(np.ones(3), dtype=tf.float32)
try:
    tf.raw_ops.LSTMBlockCell(x=a(), cs_prev=a(), h_prev=a(), w=a(), wci=a(), wcf=a(), wco=a(), b=a())
except Exception:
    pass
"""


@functools.lru_cache(maxsize=None)
def tf_crash_reproduces() -> bool:
    """Whether this machine's TensorFlow aborts on the rules' LSTMBlockCell
    input (TF 2.21 does on any CPU; a later TF may have fixed it)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, timeout=600)
    return r.returncode != 0


#: tests that need the real TensorFlow crash of CRASH_RULES
needs_tf_crash = pytest.mark.skipif(not tf_crash_reproduces(),
                                    reason="this TensorFlow does not abort on a rank-1 LSTMBlockCell input")

# ---- the upstream stand-in (tests/upstream_standin) ------------------------------------------
STANDIN = TESTS / "upstream_standin"
STANDIN_SRC = STANDIN / "Tester" / "src"
STANDIN_MODULES = ("ArgType", "ArgumentValue", "Argument", "APIManager", "Option", "Runner")


def standin_modules() -> Iterator[SimpleNamespace]:
    """The stand-in's modules imported under upstream's top-level names, then
    removed again (what was imported under those names before comes back).
    Use as a fixture: ``up = pytest.fixture(scope="module", name="up")(standin_modules)``."""
    saved = {n: sys.modules.pop(n, None) for n in STANDIN_MODULES}
    sys.path.insert(0, str(STANDIN_SRC))
    try:
        yield SimpleNamespace(**{n: importlib.import_module(n) for n in STANDIN_MODULES})
    finally:
        sys.path.remove(str(STANDIN_SRC))
        for n in STANDIN_MODULES:
            sys.modules.pop(n, None)
            if saved[n] is not None:
                sys.modules[n] = saved[n]
