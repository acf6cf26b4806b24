"""Setup shared by several test files: where the shared data is, reading a
campaign's store, the Conv2D crash rules, and the upstream stand-in's modules."""
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


def conv2d_explicit_padding_rules(input_rank: str) -> str:
    """Rules YAML for Conv2D with EXPLICIT padding and no explicit_paddings:
    TF 2.21 aborts (CHECK failure in tensor_format.h) on a rank-1 input instead
    of raising InvalidArgumentError, and rejects a rank-4 one. ``input_rank``
    is the rule on the input's rank (``input.rank == 1`` crashes every time)."""
    return f"""
rules:
  tf.raw_ops.Conv2D:
    - {input_rank}
    - filter.rank == 4
    - padding == 'EXPLICIT'
    - len(strides) == 4
    - strides[0] == 1 and strides[1] == 1 and strides[2] == 1 and strides[3] == 1
    - T == 'bfloat16'
    - data_format == 'NHWC'
    - not explicit_paddings.present
    - not dilations.present
"""


#: every generated Conv2D input hits the CHECK failure
CRASH_RULES = conv2d_explicit_padding_rules("input.rank == 1")

_PROBE = """
import numpy as np, tensorflow as tf
x = tf.constant(np.ones(12), dtype=tf.bfloat16)
f = tf.constant(np.ones((10, 1, 4, 1)), dtype=tf.bfloat16)
try:
    tf.raw_ops.Conv2D(input=x, filter=f, strides=[1, 1, 1, 1], padding="EXPLICIT", use_cudnn_on_gpu=False)
except Exception:
    pass
"""


@functools.lru_cache(maxsize=None)
def conv2d_crash_reproduces() -> bool:
    """Whether this machine's TensorFlow aborts on the rules' Conv2D input.
    The abort is in oneDNN's Conv2D kernel, which TensorFlow 2.21 takes only
    on CPUs with AVX-512 (elsewhere the input is rejected as invalid)."""
    env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS="1", TF_CPP_MIN_LOG_LEVEL="3", OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, timeout=600)
    return r.returncode != 0


#: tests that need the real Conv2D crash of CRASH_RULES
needs_conv2d_crash = pytest.mark.skipif(not conv2d_crash_reproduces(),
                                        reason="this CPU takes no oneDNN Conv2D path: the rules' input is invalid, not a crash")

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
