"""Campaigns through a real local Ray cluster (started here on 127.0.0.1 with
2 CPUs, shut down after): the records equal a one-process campaign's, a
killed Ray worker loses nothing, and an API our code fails on is recorded."""
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from acetest_ml.distributed import loopback_only  # noqa: E402

loopback_only()  # the test cluster binds 127.0.0.1, nothing else
ray = pytest.importorskip("ray")
#: under pytest-xdist the Ray tests run on one worker, one cluster at a time
pytestmark = pytest.mark.xdist_group("ray")
from ray.cluster_utils import Cluster  # noqa: E402

from acetest_ml.cli import main  # noqa: E402

from helpers import broken_data, needs_acetest_data as needs_data  # noqa: E402
from test_whole_campaign import records  # noqa: E402

ENV = dict(os.environ, OMP_NUM_THREADS="1", TF_CPP_MIN_LOG_LEVEL="2")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV["PYTHONPATH"] = os.pathsep.join([REPO] + ([ENV["PYTHONPATH"]] if ENV.get("PYTHONPATH") else []))


@pytest.fixture(scope="module")
def cluster():
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = ENV["PYTHONPATH"]  # the Ray workers import this checkout
    c = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "include_dashboard": False, "node_ip_address": "127.0.0.1"})
    assert c.address.startswith("127.0.0.1:"), c.address
    try:
        yield c
    finally:
        if ray.is_initialized():
            ray.shutdown()
        c.shutdown()
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old


def campaign(out, apis, *extra):
    args = ["campaign", "--out", out, "--no-progress", "--seed", "4", *extra]
    for a in apis:
        args += ["--api", a]
    return args


TWO = ["tf.raw_ops.Add", "torch.ops.aten.mm"]


def test_ray_records_what_one_process_records(tmp_path, cluster, capsys):
    local, onray = str(tmp_path / "local"), str(tmp_path / "ray")
    assert main(campaign(local, TWO, "--budget", "15", "--jobs", "1")) == 0
    assert main(campaign(onray, TWO, "--budget", "15", "--ray", cluster.address)) == 0
    assert "overall" in capsys.readouterr().out
    got = records(onray)
    assert len(got) >= 30 and got == records(local)
    s = json.load(open(os.path.join(onray, "summary.json")))
    assert all(s["apis"][a]["executed"] == 15 for a in TWO)
    # --resume across a Ray run: a bigger budget continues from the store
    assert main(campaign(onray, TWO, "--budget", "20", "--ray", cluster.address, "--resume")) == 0
    more = records(onray)
    assert set(got) <= set(more)
    assert sum(1 for r in more if r[5] in ("pass", "invalid", "crash", "timeout")) == 40


@needs_data
def test_ray_api_failing_in_our_code_is_recorded(tmp_path, cluster, capsys):
    out = str(tmp_path / "c")
    rc = main(campaign(out, ["tf.raw_ops.Tile", "tf.raw_ops.BiasAdd"], "--budget", "5",
                       "--constraints", "acetest", "--acetest-data", broken_data(tmp_path), "--acetest-extensions",
                       "--ray", cluster.address))
    assert rc == 0
    assert "error:" in capsys.readouterr().out
    s = json.load(open(os.path.join(out, "summary.json")))
    assert s["apis"]["tf.raw_ops.Tile"]["status"] == "error"
    assert "incompatible" in s["apis"]["tf.raw_ops.Tile"]["reason"]
    assert s["apis"]["tf.raw_ops.BiasAdd"]["executed"] == 5


def _children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def _descendants(pid):
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for c in _children(p):
            out.append(c)
            todo.append(c)
    return out


def _cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _task_worker(raylet_pid):
    """The pid of a Ray worker process (under our raylet) that runs a task
    with a framework worker."""
    for pid in _descendants(raylet_pid):
        if "acetest_ml.execute.worker" in _cmdline(pid):
            with open(f"/proc/{pid}/status") as f:
                ppid = int(next(line for line in f if line.startswith("PPid:")).split()[1])
            if "default_worker" in _cmdline(ppid) or "ray::" in _cmdline(ppid):
                return ppid
    return None


def test_killed_ray_worker_loses_nothing_and_the_api_completes(tmp_path, cluster):
    # a budget large enough that the task is still running when the test looks
    # for its worker (250 runs could end between two polls on an idle machine)
    apis, budget = ["tf.raw_ops.BiasAdd"], "1500"
    out = str(tmp_path / "killed")
    proc = subprocess.Popen([sys.executable, "-m", "acetest_ml.cli", *campaign(out, apis, "--budget", budget,
                             "--ray", cluster.address)], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    raylet = cluster.head_node.all_processes["raylet"][0].process.pid
    killed, seen = None, []
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
        try:
            seen = records(out)
        except sqlite3.OperationalError:
            continue
        if len(seen) >= 20:
            killed = _task_worker(raylet)
            if killed:
                os.kill(killed, signal.SIGKILL)
                break
    assert killed, "no running Ray task found to kill"
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-3000:]
    after = records(out)
    assert after[:len(seen)] == seen  # nothing recorded was lost or changed
    assert [r[2] for r in after] == list(range(len(after)))  # no index twice, none skipped
    s = json.load(open(os.path.join(out, "summary.json")))
    assert s["apis"]["tf.raw_ops.BiasAdd"]["executed"] == int(budget)
    assert s["apis"]["tf.raw_ops.BiasAdd"]["status"] == "done"
    # and the records are those of an uninterrupted campaign
    fresh = str(tmp_path / "fresh")
    assert main(campaign(fresh, apis, "--budget", budget, "--jobs", "1")) == 0
    assert records(fresh) == after


def test_ray_missing_says_so_in_one_line(tmp_path):
    # a Python without ray: simulated by hiding the module for the child
    code = ("import sys; sys.modules['ray'] = None; from acetest_ml.cli import main; "
            f"sys.exit(main(['campaign', '--api', 'tf.raw_ops.Add', '--out', {str(tmp_path / 'x')!r}, "
            "'--ray', 'local']))")
    r = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert lines[-1].startswith("acetest-ml: error:") and "pip install" in lines[-1]
    assert "Traceback" not in r.stderr
