"""Parity of our ACETest mode with upstream's Tester (issue 10, point 2).

    python -m acetest_ml.bench --upstream --parity [--rounds 60] [--seeds 2 3 4] [--api A ...]
                                [--out DIR] [--publish] [--report-only]

For every API of the ACETest data (``--acetest-data``, default
``../shared/acetest-data``) and every seed, three arms on the same files and
the same round count:

============  ================================================================
``upstream``  upstream's Tester alone (a private copy, ``cpu_ori`` mode)
``ours``      our engine, ``--constraints acetest``, the faithful default
``ours-ext``  the same with ``--acetest-extensions`` (our improvements)
============  ================================================================

The report gives per API and pooled: pass rate by upstream's definition
((runs - invalid) / runs) and by ours (runs that returned normally), runs/s,
valid runs/s, crash signatures, and ``ours - upstream`` in points with its
binomial noise (two standard errors of the difference). An API where ours is
below upstream by more than 2 points gets its reason from
``benchmarks/upstream_parity_reasons.yaml`` (reviewed by hand), or
"unexplained". APIs upstream cannot run (no op_json) are listed with that
reason. Arm results are JSON files under ``<out>/arms``; a rerun with the same
``--out`` skips the finished ones, and an arm being run is claimed (a
``.claim`` file with the pid), so two processes sharing ``--out`` split the
work instead of repeating it.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import Any, Optional

import yaml

from ..errors import UserError
from . import upstream as scope

ARMS = ("upstream", "ours", "ours-ext")
LABELS = {"upstream": "upstream's Tester", "ours": "our ACETest mode (faithful default)",
          "ours-ext": "our ACETest mode with --acetest-extensions"}
WITHIN_POINTS = 2.0
REASONS_FILE = os.path.join("benchmarks", "upstream_parity_reasons.yaml")


def parity_apis(acetest_data: str) -> list[str]:
    from ..spec.acetest_data import AcetestData
    return AcetestData(acetest_data).apis()


def run_parity(apis: list[str], home: str, acetest_data: str, out: str, *, rounds: int = 60,
               seeds: tuple = (2,), arms: tuple = ARMS, round_timeout: int = 10,
               models: Optional[str] = None, progress=print, report_only: bool = False) -> dict:
    """Run (or, with ``report_only``, only read) every arm of every API and seed."""
    from ..settings import DEFAULT_MODELS
    data = scope.data_root(home, acetest_data)
    os.makedirs(os.path.join(out, "arms"), exist_ok=True)
    models = models or DEFAULT_MODELS
    runs: dict[str, dict] = {}
    for i, api in enumerate(apis, 1):
        if not os.path.isfile(os.path.join(data, "op_json", api.split(".")[-1] + ".json")):
            runs[api] = {"skipped": "no op_json in the ACETest data: upstream's Tester cannot run it"}
            continue
        if scope.op_of(data, api) is None:
            runs[api] = {"skipped": "not in API2OP.csv"}
            continue
        runs[api] = {}
        for seed in seeds:
            for arm in arms:
                path = os.path.join(out, "arms", f"{api}.{arm}.s{seed}.json")
                if os.path.isfile(path):
                    with open(path) as f:
                        runs[api].setdefault(arm, {})[str(seed)] = json.load(f)
                    continue
                if report_only or not _claim(path):
                    continue  # another process sharing --out is running this arm
                progress(f"[{i}/{len(apis)}] {api} seed {seed}: {arm} ...")
                wd = os.path.join(out, "work", api, f"{arm}.s{seed}")
                if arm == "upstream":
                    row = scope.run_upstream_arm("upstream", api, home, data, rounds, seed, wd, models=models,
                                                 round_timeout=round_timeout)
                else:
                    row = scope.run_our_arm("ours", api, acetest_data, rounds, seed, wd, models,
                                            extensions=(arm == "ours-ext"))
                with open(path, "w") as f:
                    json.dump(row, f, indent=1)
                _release(path)
                runs[api].setdefault(arm, {})[str(seed)] = row
                progress(f"    {scope._short(row)}")
    doc: dict[str, Any] = {"rounds": rounds, "seeds": list(seeds), "arms": list(arms), "round_timeout": round_timeout,
           "home": home, "data": data, "runs": runs}
    doc["apis"] = {api: summarise(r, arms) for api, r in runs.items()}
    doc["pooled"] = pooled(doc["apis"], arms)
    return doc


def _claim(path: str) -> bool:
    """Claim the arm whose result goes to ``path`` for this process (a
    ``.claim`` file holding its pid, created exclusively). A claim left by a
    process that is gone is taken over. False: another live process has it."""
    claim = path + ".claim"
    for _ in range(2):
        try:
            fd = os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                with open(claim) as f:
                    pid = int(f.read().strip() or 0)
            except (OSError, ValueError):
                pid = 0
            if pid == os.getpid():
                return True
            if pid > 0 and _alive(pid):
                return False
            try:
                os.unlink(claim)  # stale: its process is gone
            except FileNotFoundError:
                pass
            continue
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        return True
    return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _release(path: str) -> None:
    try:
        os.unlink(path + ".claim")
    except FileNotFoundError:
        pass


def _merge(rows: list[dict]) -> Optional[dict]:
    rows = [r for r in rows if r.get("runs")]
    if not rows:
        return None
    n = sum(r["runs"] for r in rows)
    inv = sum(r["invalid"] for r in rows)
    passed = sum(r["passed"] for r in rows)
    secs = sum(r.get("seconds") or 0 for r in rows)
    return {"runs": n, "invalid": inv, "passed": passed, "seconds": secs,
            "crash": sum(r.get("crash", 0) for r in rows), "timeout": sum(r.get("timeout", 0) for r in rows),
            "up_pass_rate": (n - inv) / n, "pass_rate": passed / n,
            "runs_per_s": n / secs if secs else None, "valid_per_s": (n - inv) / secs if secs else None,
            "per_seed_up_pass": [round((r["runs"] - r["invalid"]) / r["runs"], 4) for r in rows],
            "crash_signatures": sorted({s for r in rows for s in r.get("crash_signatures", [])})}


def summarise(r: dict, arms=ARMS) -> dict:
    """One API: each arm merged over its seeds, and ours - upstream."""
    if "skipped" in r:
        return {"skipped": r["skipped"]}
    out: dict = {}
    errors = []
    not_run = [arm for arm in arms if not r.get(arm)]
    if not_run:
        out["not_run"] = not_run
    for arm in arms:
        rows = list(r.get(arm, {}).values())
        out[arm] = _merge(rows)
        errors += [f"{arm}: {x.get('error')}" for x in rows if not x.get("runs") and x.get("error")]
    if errors:
        out["errors"] = errors
    up = out.get("upstream")
    for arm in arms:
        if arm == "upstream" or not up or not out.get(arm):
            continue
        ours = out[arm]
        d = 100 * (ours["up_pass_rate"] - up["up_pass_rate"])
        se = 100 * math.sqrt(_var(up) + _var(ours))
        out[f"{arm}_diff"] = {"points": round(d, 2), "noise": round(2 * se, 2), "verdict": verdict(d, 2 * se)}
    return out


def _var(x: dict) -> float:
    p, n = x["up_pass_rate"], x["runs"]
    return p * (1 - p) / n if n else 0.0


def verdict(points: float, noise: float) -> str:
    if points >= 0:
        return "ours >= upstream"
    if points >= -WITHIN_POINTS:
        return "within 2 points"
    if points >= -noise:
        return "below, within noise"
    return "below"


def pooled(apis: dict, arms=ARMS) -> dict:
    out = {}
    for arm in arms:
        rows = [a[arm] for a in apis.values() if isinstance(a.get(arm), dict) and a[arm].get("runs")]
        m = _merge(rows) or {}
        m["apis"] = len(rows)
        m.pop("per_seed_up_pass", None)
        out[arm] = m
    for arm in arms:
        if arm == "upstream":
            continue
        counts: dict[str, int] = {}
        for a in apis.values():
            v = (a.get(f"{arm}_diff") or {}).get("verdict")
            if v:
                counts[v] = counts.get(v, 0) + 1
        out[arm]["verdicts"] = counts
    return out


def load_reasons(path: str) -> dict:
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        doc = yaml.safe_load(f) or {}
    if not isinstance(doc, dict):
        raise UserError(f"{path}: expected a mapping of API names to reasons")
    return {str(k): str(v) for k, v in doc.items()}


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _num(x) -> str:
    return "n/a" if x is None else f"{x:.1f}"


def markdown(doc: dict, reasons: dict, command: str = "") -> str:
    arms = tuple(doc["arms"])
    seeds = ", ".join(str(s) for s in doc["seeds"])
    lines = ["# Parity: our ACETest mode beside upstream's Tester", "",
             f"{doc['rounds']} rounds per API, arm and seed; seeds {seeds}; the same op_json and "
             f"constraint files for every arm; upstream round timeout {doc['round_timeout']} s."
             + (f" Command: `{command}`." if command else ""), "",
             "Arms: " + "; ".join(f"`{a}` = {LABELS[a]}" for a in arms) + ". `up pass` = upstream's "
             "definition ((runs - invalid) / runs); `pass` = runs that returned normally. `diff` = "
             "`ours - upstream` in points of up pass; `noise` = two standard errors of that difference.", "",
             "## Pooled", "",
             "| arm | APIs | runs | up pass | pass | runs/s | valid runs/s | crash signatures | verdicts |",
             "|---|---|---|---|---|---|---|---|---|"]
    for arm in arms:
        p = doc["pooled"].get(arm, {})
        v = ", ".join(f"{k}: {n}" for k, n in sorted(p.get("verdicts", {}).items()))
        lines.append(f"| {arm} | {p.get('apis', 0)} | {p.get('runs', 0)} | {_pct(p.get('up_pass_rate'))} | "
                     f"{_pct(p.get('pass_rate'))} | {_num(p.get('runs_per_s'))} | {_num(p.get('valid_per_s'))} | "
                     f"{len(p.get('crash_signatures', []))} | {v} |")
    lines += ["", "## Per API", "",
              "Cells: up pass / pass / valid runs/s / crash signatures.", "",
              "| API | " + " | ".join(arms) + " | ours diff (noise) | verdict | reason |",
              "|---|" + "---|" * (len(arms) + 3)]
    notes = []
    for api, a in doc["apis"].items():
        if "skipped" in a:
            lines.append(f"| {api} | " + " | ".join(["-"] * len(arms)) + f" | | not runnable | {a['skipped']} |")
            continue
        cells = []
        for arm in arms:
            x = a.get(arm)
            cells.append(("not run" if arm in a.get("not_run", []) else "no runs") if not x else
                         f"{_pct(x['up_pass_rate'])} / {_pct(x['pass_rate'])} / {_num(x['valid_per_s'])} / "
                         f"{len(x['crash_signatures'])}")
        d = a.get("ours_diff")
        diff = f"{d['points']:+.1f} ({d['noise']:.1f})" if d else ""
        ver = d["verdict"] if d else "n/a"
        reason = ""
        if d and d["points"] < -WITHIN_POINTS:
            reason = reasons.get(api, "unexplained")
        elif not d and a.get("not_run"):
            reason = "not run yet (" + ", ".join(a["not_run"]) + ")"
        elif not d:
            reason = "; ".join(a.get("errors", [])) or "an arm has no runs"
        lines.append(f"| {api} | " + " | ".join(cells) + f" | {diff} | {ver} | {reason} |")
        for e in a.get("errors", []):
            notes.append(f"- {api}: {e}")
    sigs = {arm: doc["pooled"].get(arm, {}).get("crash_signatures", []) for arm in arms}
    lines += ["", "Crash signatures: " + "; ".join(f"{k}: {', '.join(s) or 'none'}" for k, s in sigs.items())]
    if notes:
        lines += ["", "Notes:", ""] + notes
    return "\n".join(lines) + "\n"


def write(doc: dict, out: str, reasons: dict, command: str = "", publish_dir: Optional[str] = None) -> list[str]:
    paths = [os.path.join(out, "upstream_parity.json"), os.path.join(out, "upstream_parity.md")]
    with open(paths[0], "w") as f:
        json.dump({k: v for k, v in doc.items() if k != "runs"}, f, indent=1)
    with open(paths[1], "w") as f:
        f.write(markdown(doc, reasons, command))
    if publish_dir:
        import shutil
        for p in paths:
            shutil.copy(p, os.path.join(publish_dir, os.path.basename(p)))
    return paths


def main(args) -> int:
    """``python -m acetest_ml.bench --upstream --parity`` (``args`` from bench's parser)."""
    home = scope.find_checkout(args.acetest_home)
    if home is None:
        print("acetest-ml bench --parity: no ACETest checkout (set ACETEST_HOME or run "
              "git submodule update --init third_party/ACETest); nothing to do")
        return 0
    if args.rounds < 1:
        raise UserError(f"--rounds must be at least 1, got {args.rounds}")
    seeds = tuple(args.seeds or (2,))
    arms = tuple(a for a in ARMS if not args.arms or a in args.arms)
    unknown = [a for a in (args.arms or []) if a not in ARMS]
    if unknown:
        raise UserError(f"unknown arm {unknown[0]!r} (parity arms: {', '.join(ARMS)})")
    apis = list(args.api) if args.api else parity_apis(args.acetest_data)
    out = args.out or os.path.join("benchmarks", "results", "parity-" + time.strftime("%Y%m%d-%H%M%S"))
    os.makedirs(out, exist_ok=True)
    here = os.path.dirname(os.path.abspath(args.config))
    reasons = load_reasons(os.path.join(here, os.path.basename(REASONS_FILE)))
    doc = run_parity(apis, home, args.acetest_data, out, rounds=args.rounds, seeds=seeds, arms=arms,
                     round_timeout=args.round_timeout, report_only=args.report_only,
                     progress=lambda m: print(m, file=sys.stderr, flush=True))
    cmd = "python -m acetest_ml.bench " + " ".join(a for a in sys.argv[1:] if a != "--report-only")
    paths = write(doc, out, reasons, cmd.strip(), publish_dir=here if args.publish else None)
    print(markdown(doc, reasons).split("## Per API")[0])
    print("written: " + ", ".join(paths))
    return 0
