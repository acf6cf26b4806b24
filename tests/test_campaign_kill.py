"""A killed campaign leaves no process behind: its pool processes notice that
the campaign process is gone, stop, and take their framework workers with
them; nothing recorded is lost."""
import os
import signal
import sqlite3
import subprocess
import sys
import time

ENV = dict(os.environ, OMP_NUM_THREADS="1", TF_CPP_MIN_LOG_LEVEL="2")


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(name))
    return kids


def _descendants(pid: int) -> set[int]:
    kids, out, todo = _children(), set(), [pid]
    while todo:
        for c in kids.get(todo.pop(), []):
            if c not in out:
                out.add(c)
                todo.append(c)
    return out


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _counts(out: str) -> dict[str, int]:
    db = sqlite3.connect(os.path.join(out, "runs.sqlite"))
    try:
        return dict(db.execute("SELECT api, COUNT(*) FROM candidates GROUP BY api").fetchall())
    finally:
        db.close()


def _cmdline(pid: int) -> bytes:
    """A process's command line, empty when it has already ended."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def test_killed_campaign_stops_its_pool_and_workers(tmp_path):
    out = str(tmp_path / "c")
    apis = ["tf.raw_ops.Add", "torch.ops.aten.mm"]
    cmd = [sys.executable, "-m", "acetest_ml.cli", "campaign", "--budget", "5000", "--seed", "1",
           "--jobs", "2", "--out", out, "--no-progress"] + [x for a in apis for x in ("--api", a)]
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    family: set[int] = set()
    try:
        deadline = time.time() + 300
        while time.time() < deadline:
            time.sleep(0.5)
            family |= _descendants(proc.pid)
            try:
                counts = _counts(out)
            except sqlite3.OperationalError:
                continue
            if all(counts.get(a, 0) >= 3 for a in apis):
                break
        family |= _descendants(proc.pid)
        assert all(counts.get(a, 0) >= 3 for a in apis), counts
        workers = [p for p in family if b"acetest_ml.execute.worker" in _cmdline(p)]
        assert len(workers) >= 2, "both framework workers should be running"
        proc.send_signal(signal.SIGKILL)  # the campaign process only, not its group
        proc.wait()
        deadline = time.time() + 60
        while time.time() < deadline and any(_alive(p) for p in family):
            time.sleep(0.5)
        left = sorted(p for p in family if _alive(p))
        assert not left, f"processes left running after the campaign was killed: {left}"
        # what was recorded stays, and nothing more is written
        counts = _counts(out)
        time.sleep(2)
        assert _counts(out) == counts
        assert all(counts[a] >= 3 for a in apis)
    finally:
        for p in family | {proc.pid}:
            if _alive(p):
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
