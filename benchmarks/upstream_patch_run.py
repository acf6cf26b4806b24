"""Upstream ACETest's own command line with and without ``patches/`` (issue 14).

For each API and arm, a private copy of the Tester (only that API's data files)
is run as ``cd Tester/src && python main.py --framework=tf --target_api=API
--test_round=N --mode=cpu_ori ...`` with ``patches/`` on ``PYTHONPATH``:

- ``unfiltered``: ``ACETEST_ML_FILTER=none`` (the patch only seeds upstream's
  generators, so both arms start from the same random state),
- ``online``: ``ACETEST_ML_FILTER=online``.

Both arms of an API run at the same time (two processes under ``nice``), so
they share one machine load: timings are compared as ratios within one run.
Upstream's ``res.csv`` gives runs / invalid / crash / timeout; pass rate is
upstream's definition ((runs - invalid) / runs). The hook's statistics give
its own time by phase and the executed runs' time by outcome. Writes Markdown
+ JSON.

    python benchmarks/upstream_patch_run.py --acetest-home ~/ACETest \\
        --acetest-data ../shared/acetest-data --api tf.raw_ops.MaxPool3D --rounds 300
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from acetest_ml.bench.upstream import _arm_row, _crash_signatures, data_root, private_home  # noqa: E402
from acetest_ml.upstream.runner import collect_results  # noqa: E402

ARMS = {"unfiltered": "none", "online": "online"}


def run_arm(arm: str, api: str, home: str, data: str, rounds: int, seed: int, warmup: int,
            round_timeout: int, work_dir: str) -> dict:
    priv = private_home(home, data, api, os.path.join(work_dir, "home"))
    work = os.path.join(work_dir, "work")
    os.makedirs(work, exist_ok=True)
    env = dict(os.environ)
    env.update(PYTHONPATH=os.pathsep.join([os.path.join(REPO, "patches"), REPO]),
               PYTHONHASHSEED=str(seed), ACETEST_ML_SEED=str(seed), ACETEST_ML_FILTER=ARMS[arm],
               ACETEST_ML_WARMUP=str(warmup), OMP_NUM_THREADS="1", TF_CPP_MIN_LOG_LEVEL="2")
    cmd = [sys.executable, "main.py", "--framework=tf", f"--target_api={api}", f"--test_round={rounds}",
           "--mode=cpu_ori", f"--round_timeout={round_timeout}", f"--work_path={work}"]
    t0 = time.time()
    load_start = [round(x, 1) for x in os.getloadavg()]
    with open(os.path.join(work_dir, "upstream.log"), "w") as log:
        code = subprocess.call(["nice", "-n", "10"] + cmd, cwd=os.path.join(priv, "Tester", "src"), env=env,
                               stdout=log, stderr=subprocess.STDOUT)
    wall = time.time() - t0
    res = collect_results(arm, work, "tf", {})
    rows = [r for r in res.rows if r["api"] == api]
    if code != 0 or not rows:
        return {"runs": 0, "error": f"exit {code}; " + "; ".join(res.messages)[:300], "wall_s": wall}
    r = rows[0]
    row = _arm_row(r["runs"], r["invalid"], r["crash"], r["timeout"], r["oom"], r["seconds"], wall,
                   _crash_signatures(work, api), samples=r["samples"])
    st = res.stats.get(api)
    if st:
        row["filter"] = {k: st.get(k) for k in ("generated", "discarded", "explored", "samples_scored",
                                                 "samples_rejected", "rounds_moved", "score_us_per_candidate",
                                                 "hook_time_s", "run_time_s")}
        if "online" in st:
            row["filter"]["trainings"] = st["online"].get("trainings")
    row["command"] = " ".join(cmd)
    row["load_average"] = [load_start, [round(x, 1) for x in os.getloadavg()]]
    return row


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _hook_s(r: dict) -> str:
    t = (r.get("filter") or {}).get("hook_time_s")
    return f"{sum(t.values()):.1f}" if t else "-"


def _pass_s(r: dict) -> str:
    t = (r.get("filter") or {}).get("run_time_s")
    return f"{t.get('pass', 0.0):.0f}" if t else "-"


def _load(r: dict) -> str:
    la = r.get("load_average")
    return f"{la[0][0]} / {la[1][0]}" if la else "-"


def pooled(results: dict) -> dict:
    """Sums per arm over the APIs where the unfiltered arm passed at least once
    and every arm ran."""
    apis = [api for api, arms in results.items()
            if all((arms.get(a) or {}).get("runs") for a in ARMS)
            and arms["unfiltered"]["invalid"] < arms["unfiltered"]["runs"]]
    if not apis:
        return {}
    out: dict = {}
    for arm in ARMS:
        rows = [results[api][arm] for api in apis]
        out[arm] = {"runs": sum(r["runs"] for r in rows), "invalid": sum(r["invalid"] for r in rows),
                    "seconds": sum(r["seconds"] for r in rows),
                    "crash_signatures": len({(api, s) for api in apis for s in results[api][arm]["crash_signatures"]})}
    return {"apis": len(apis), "arms": out}


def markdown(doc: dict) -> str:
    lines = ["# patches/ on upstream's own command line", "",
             f"Upstream Tester at `{doc['acetest_home']}` (private copy per run), data "
             f"`{doc['acetest_data']}`, {doc['rounds']} rounds, seed {doc['seed']}, online warm-up "
             f"{doc['warmup']}; {doc['date']}.", "",
             "```", "cd <copy>/Tester/src",
             f"PYTHONPATH=<repo>/patches:<repo> PYTHONHASHSEED={doc['seed']} ACETEST_ML_SEED={doc['seed']} "
             "ACETEST_ML_FILTER=none|online \\",
             f"  ACETEST_ML_WARMUP={doc['warmup']} python main.py --framework=tf --target_api=API "
             f"--test_round={doc['rounds']} --mode=cpu_ori --round_timeout={doc['round_timeout']} --work_path=<work>",
             "```", "",
             "| API | arm | runs | invalid | crash | timeout | pass (upstream's def.) | invalid-run cut | "
             "runner s | runs/s | valid runs/s | crash signatures | hook s | passing runs s | load 1-min start/end |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for api, arms in doc["results"].items():
        base = arms.get("unfiltered", {})
        for arm, r in arms.items():
            if not r.get("runs"):
                lines.append(f"| {api} | {arm} | error: {r.get('error', '')} |||||||||||")
                continue
            cut = "-"
            if arm != "unfiltered" and base.get("invalid"):
                cut = _pct(1 - r["invalid"] / base["invalid"])
            lines.append(f"| {api} | {arm} | {r['runs']} | {r['invalid']} | {r['crash']} | {r['timeout']} | "
                         f"{_pct(r['up_pass_rate'])} | {cut} | {r['seconds']:.0f} | {r['runs_per_s']:.2f} | "
                         f"{r['valid_per_s']:.2f} | {len(r['crash_signatures'])} | {_hook_s(r)} | {_pass_s(r)} | {_load(r)} |")
    pool = pooled(doc["results"])
    if pool:
        lines += ["", f"Pooled over the {pool['apis']} APIs where the unfiltered arm passes at least once:", "",
                  "| arm | runs | invalid | pass (upstream's def.) | invalid-run cut | runner s | runs/s | valid runs/s "
                  "| crash signatures |", "|---|---|---|---|---|---|---|---|---|"]
        for arm, r in pool["arms"].items():
            cut = "-" if arm == "unfiltered" else _pct(1 - r["invalid"] / pool["arms"]["unfiltered"]["invalid"])
            lines.append(f"| {arm} | {r['runs']} | {r['invalid']} | {_pct(1 - r['invalid'] / r['runs'])} | {cut} | "
                         f"{r['seconds']:.0f} | {r['runs'] / r['seconds']:.2f} | "
                         f"{(r['runs'] - r['invalid']) / r['seconds']:.2f} | {r['crash_signatures']} |")
    if doc.get("load_average_start"):
        how = "The arms ran one at a time" if doc.get("sequential") else "Both arms ran side by side"
        lines += ["", f"{how}; load average (1, 5, 15 min) {doc['load_average_start']} at "
                  f"the start, {doc.get('load_average_end')} at the end."]
    if doc.get("note"):
        lines += ["", doc["note"]]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--acetest-home", required=True)
    p.add_argument("--acetest-data", default=os.path.join(REPO, "..", "shared", "acetest-data"))
    p.add_argument("--api", action="append", required=True)
    p.add_argument("--rounds", type=int, default=300)
    p.add_argument("--seed", type=int, default=3)
    p.add_argument("--warmup", type=int, default=40)
    p.add_argument("--round-timeout", type=int, default=60)
    p.add_argument("--work", required=True)
    p.add_argument("--write-to", default=os.path.join(REPO, "benchmarks"))
    p.add_argument("--note", default="")
    p.add_argument("--arms", default=",".join(ARMS),
                   help="comma-separated arms to run (others are taken from --reuse)")
    p.add_argument("--reuse", default=None,
                   help="a JSON written by this script: arms not run now are copied from it")
    p.add_argument("--sequential", action="store_true",
                   help="run the arms one after the other instead of side by side")
    a = p.parse_args(argv)
    arms = [x for x in a.arms.split(",") if x]
    bad = [x for x in arms if x not in ARMS]
    if bad or not arms:
        print(f"upstream_patch_run: --arms: unknown arm(s) {bad} (use {', '.join(ARMS)})", file=sys.stderr)
        return 2
    reused: dict = {}
    if a.reuse:
        try:
            with open(a.reuse) as f:
                reused = json.load(f).get("results", {})
        except (OSError, ValueError) as e:
            print(f"upstream_patch_run: --reuse: cannot read {a.reuse} ({e})", file=sys.stderr)
            return 2
    if not os.path.isfile(os.path.join(a.acetest_home, "Tester", "src", "main.py")):
        print(f"upstream_patch_run: {a.acetest_home}: no Tester/src/main.py", file=sys.stderr)
        return 2
    data = data_root(a.acetest_home, a.acetest_data)
    doc = {"acetest_home": a.acetest_home, "acetest_data": a.acetest_data, "rounds": a.rounds, "seed": a.seed,
           "warmup": a.warmup, "round_timeout": a.round_timeout,
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "note": a.note, "results": {},
           "load_average_start": [round(x, 1) for x in os.getloadavg()]}
    doc["arms_run"] = arms
    doc["sequential"] = bool(a.sequential)
    for api in a.api:
        # side by side (default): same machine load for both arms
        with ThreadPoolExecutor(max_workers=1 if a.sequential else len(arms)) as pool:
            futures = {arm: pool.submit(run_arm, arm, api, a.acetest_home, data, a.rounds, a.seed, a.warmup,
                                        a.round_timeout, os.path.join(a.work, api.split(".")[-1], arm))
                       for arm in arms}
        doc["results"][api] = {}
        for arm in ARMS:
            if arm in futures:
                r = doc["results"][api][arm] = futures[arm].result()
            elif arm in reused.get(api, {}):
                r = doc["results"][api][arm] = dict(reused[api][arm], reused_from=a.reuse)
            else:
                continue
            print(f"{api} {arm}: {r.get('runs')} runs, pass {_pct(r.get('up_pass_rate'))}", flush=True)
        _write(doc, a.write_to)
    doc["load_average_end"] = [round(x, 1) for x in os.getloadavg()]
    _write(doc, a.write_to)
    return 0


def _write(doc: dict, where: str) -> None:
    """Write the JSON and Markdown (after every API, so a killed run keeps what finished)."""
    doc["pooled"] = pooled(doc["results"])
    os.makedirs(where, exist_ok=True)
    with open(os.path.join(where, "upstream_patch_run.json"), "w") as f:
        json.dump(doc, f, indent=1)
    with open(os.path.join(where, "upstream_patch_run.md"), "w") as f:
        f.write(markdown(doc))


if __name__ == "__main__":
    sys.exit(main())
