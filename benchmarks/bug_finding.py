"""Equal-time benchmark of bug finding (issue 11 item 4).

For every API where this project has met crashes, each arm runs for the same
wall time (``--time-budget`` per API), and the unique crash signatures of
each arm are compared:

- ``baseline``: unfiltered;
- ``filtered``: ``--ml-filter`` with a crash-aware model trained on a
  training campaign (seed A, its own time budget, not counted in the arms'
  time; reported apart);
- ``online``: ``--ml-filter online`` (crash-aware, learns in the campaign);
- ``learned+filter``: learned rules plus the offline filter, when the
  campaign supports ``learn_rules``.

Writes ``benchmarks/bug_finding.{json,md}`` (``--report-dir``): per API and
arm the executions, valid executions, crashes, unique signatures; per arm
unique signatures pooled over APIs and per CPU-hour (each API's campaign
drives one worker, so its wall time is about one core), and the signatures
the baseline found that the arm did not (lost by filtering; target 0).

    python benchmarks/bug_finding.py --time-budget 25 [--train-time 25] [--apis A,B] [--out DIR]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import statistics
import sys
import time


HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
DATA = os.path.join(REPO, "..", "shared", "acetest-data")

# APIs where this project met crashes (issue 11); ACETest constraints where the
# shared data has them, registry constraints (+ configs/rules.yaml) otherwise.
APIS = [
    "tf.raw_ops.Conv2DBackpropInput", "tf.raw_ops.Conv2DBackpropFilter",
    "tf.raw_ops.DepthwiseConv2dNative", "tf.raw_ops.DepthwiseConv2dNativeBackpropInput",
    "tf.raw_ops.DepthwiseConv2dNativeBackpropFilter", "tf.raw_ops.Conv3DBackpropInputV2",
    "tf.raw_ops.AvgPoolGrad", "tf.raw_ops.AvgPool3DGrad", "tf.raw_ops.ScatterNd",
    "tf.raw_ops.TensorScatterAdd", "tf.raw_ops.TensorScatterUpdate", "tf.raw_ops.LSTMBlockCell",
    "tf.raw_ops.Unbatch", "tf.raw_ops.RaggedGather", "tf.raw_ops.QuantizeAndDequantizeV3",
    "tf.raw_ops.LoadAndRemapMatrix", "tf.raw_ops.RFFT", "tf.raw_ops.GatherV2", "tf.raw_ops.OneHot",
]
BIG_BUDGET = 10 ** 6  # the time budget decides
#: seconds into each API's campaign at which the signatures found so far are counted
CHECKPOINTS = (1.0, 2.0, 3.0, 5.0, 10.0)


def _acetest_apis(data: str) -> set[str]:
    try:
        with open(os.path.join(data, "MANIFEST.json")) as f:
            return set(json.load(f)["apis"])
    except (OSError, ValueError, KeyError):
        return set()


def _log(msg: str) -> None:
    print(f"[bug-bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _models_yaml(work: str) -> str:
    from acetest_ml.bench.protocol import registry_copy
    from acetest_ml.settings import DEFAULT_MODELS
    return registry_copy(DEFAULT_MODELS, work)


def _arm_configs(args, models_yaml: str) -> dict[str, dict]:
    from acetest_ml.campaign import CampaignConfig
    arms = {"baseline": {}, "filtered": {"ml_filter": "offline", "models": models_yaml},
            "online": {"ml_filter": "online", "models": models_yaml}}
    if "learn_rules" in {f.name for f in dataclasses.fields(CampaignConfig)}:
        arms["learned+filter"] = {"ml_filter": "offline", "models": models_yaml, "learn_rules": True}
    if "filter_policy" in {f.name for f in dataclasses.fields(CampaignConfig)}:
        # filter policy rate: discard only what would lower valid executions per second
        arms["filtered-rate"] = {**arms["filtered"], "filter_policy": "rate"}
        if "learned+filter" in arms:
            arms["learned+filter-rate"] = {**arms["learned+filter"], "filter_policy": "rate"}
    wanted = (args.arms.split(",") if args.arms
              else [a for a in arms if a != "online" and not a.endswith("-rate")])
    return {a: arms[a] for a in wanted if a in arms}


def _campaign(args, api, by_api, out, seed, time_budget, executors, **kw) -> dict:
    from acetest_ml.campaign import CampaignConfig, run_campaign
    if os.path.exists(out):
        shutil.rmtree(out)
    cfg = CampaignConfig(apis=[api], out=out, budget=BIG_BUDGET, seed=seed, constraints="registry",
                         acetest_data=args.acetest_data, rules=os.path.join(REPO, "configs", "rules.yaml"),
                         timeout=args.timeout, jobs=1, exploration=args.exploration,
                         constraints_by_api=by_api, time_budget=time_budget,
                         known_crash_k=args.known_crash_k, **kw)
    return run_campaign(cfg, show_progress=False, executor_factory=executors)


def first_seen(out: str, api: str) -> dict[str, float]:
    """Seconds from the start of ``api``'s campaign in ``out`` to the first run
    of each crash signature (rows are written when their run has finished;
    the start is the earliest row's time less its run's duration)."""
    import sqlite3
    path = os.path.join(out, "runs.sqlite")
    if not os.path.exists(path):
        return {}
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        (t0,) = db.execute("SELECT MIN(created - COALESCE(duration, 0)) FROM candidates WHERE api = ? "
                           "AND outcome IS NOT NULL", (api,)).fetchone()
        if t0 is None:
            return {}
        return {sig: round(max(0.0, t - t0), 3) for sig, t in db.execute(
            "SELECT signature, MIN(created) FROM candidates WHERE api = ? AND signature IS NOT NULL "
            "AND outcome IN ('crash', 'timeout') GROUP BY signature", (api,))}
    finally:
        db.close()


class _Workers:
    """One worker per framework for the whole benchmark (restarted after a
    crash or timeout): every arm starts its clock on a running worker."""

    def __init__(self, timeout: float, log_dir: str):
        self.timeout, self.log_dir, self.by_fw = timeout, log_dir, {}

    def __call__(self, framework: str):
        from acetest_ml.execute.supervisor import Executor
        if framework not in self.by_fw:
            self.by_fw[framework] = Executor(framework, timeout=self.timeout, log_dir=self.log_dir)
        return self.by_fw[framework]

    def close(self) -> None:
        for ex in self.by_fw.values():
            ex.close()


def _row(v: dict) -> dict:
    return {"status": v.get("status"), "reason": v.get("reason"), "executed": v.get("executed", 0),
            "passed": v.get("passed", 0), "crash": v.get("crash", 0), "timeout": v.get("timeout", 0),
            "elapsed_s": round(float(v.get("elapsed_s") or 0.0), 2),
            "exec_per_s": round(float(v.get("exec_per_s") or 0.0), 2),
            "valid_exec_per_s": round(float(v.get("valid_exec_per_s") or 0.0), 2),
            "signatures": list(v.get("crash_signatures") or []),
            "first_seen_s": dict(v.get("first_seen_s") or {}),
            "filter": {k: (v.get("filter") or {}).get(k) for k in
                       ("mode", "candidates", "discarded", "explored", "known_crash_skipped",
                        "crash_kept", "crash_class", "cheap_runs", "rate")} if v.get("filter") else None}


def build(apis, arms: dict[str, dict], train: dict, train_rep: dict, args) -> dict:
    per_api: dict[str, dict] = {}
    for api in apis:
        per_api[api] = {arm: _row(s["apis"].get(api, {})) for arm, s in arms.items()}
        per_api[api]["train"] = {"executed": train["apis"].get(api, {}).get("executed", 0),
                                 "signatures": train["apis"].get(api, {}).get("crash_signatures", []),
                                 "model": train_rep.get(api, {}).get("status"),
                                 "crash_class": train_rep.get(api, {}).get("crash_class")}
    return {"time_budget_s": args.time_budget, "train_time_s": args.train_time, "seeds": [args.seed_train, args.seed],
            "jobs": 1, "exploration": args.exploration, "known_crash_k": args.known_crash_k,
            "arms": list(arms), "apis": per_api, "overall": overall_of(apis, list(arms), per_api)}


def overall_of(apis, arms, per_api: dict) -> dict:
    overall: dict[str, dict] = {}
    base = {api: set(per_api[api]["baseline"]["signatures"]) for api in apis} if "baseline" in arms else {}
    for arm in arms:
        pairs = {(api, s) for api in apis for s in per_api[api][arm]["signatures"]}
        cpu_s = sum(per_api[api][arm]["elapsed_s"] for api in apis)
        lost = sorted([api, s] for api in apis for s in base.get(api, set())
                      - set(per_api[api][arm]["signatures"]))
        new = sorted([api, s] for api in apis for s in set(per_api[api][arm]["signatures"])
                     - base.get(api, set()))
        executed = sum(per_api[api][arm]["executed"] for api in apis)
        passed = sum(per_api[api][arm]["passed"] for api in apis)
        # discovery over time: the signatures an arm had found t seconds into
        # each API's campaign (equal-time arms that all saturate by the end
        # of the budget still differ in how soon they get there)
        seen = [t for api in apis for sig, t in (per_api[api][arm].get("first_seen_s") or {}).items()
                if sig in per_api[api][arm]["signatures"]]
        budget = max((per_api[api][arm]["elapsed_s"] for api in apis), default=0.0)
        by_time = {f"{c:g}": sum(1 for t in seen if t <= c) for c in CHECKPOINTS if c < budget}
        overall[arm] = {"signatures": len(pairs), "cpu_hours": cpu_s / 3600.0,
                        "found_by_s": by_time,
                        "found_by_s_per_cpu_hour": {c: n / (float(c) * len(apis) / 3600.0)
                                                    for c, n in by_time.items()} if apis else {},
                        "median_time_to_signature_s": statistics.median(seen) if seen else None,
                        "mean_time_to_signature_s": statistics.mean(seen) if seen else None,
                        "signatures_per_cpu_hour": len(pairs) / (cpu_s / 3600.0) if cpu_s else 0.0,
                        "executed": executed, "passed": passed,
                        "crashes": sum(per_api[api][arm]["crash"] for api in apis),
                        "pass_rate": passed / executed if executed else 0.0,
                        "valid_exec_per_s": passed / cpu_s if cpu_s else 0.0,
                        "lost_vs_baseline": lost, "new_vs_baseline": new}
    return overall


def resign(json_path: str) -> dict:
    """Re-read a finished report's signatures with today's normalisation
    (they were normalised when recorded; later rules, such as element type
    names, only merge signatures further) and recount every arm."""
    from acetest_ml.execute.supervisor import renormalise
    with open(json_path) as f:
        res = json.load(f)
    for rows in res["apis"].values():
        for row in rows.values():
            if isinstance(row, dict) and "signatures" in row:
                row["signatures"] = sorted({renormalise(x) for x in row["signatures"]})
                firsts: dict[str, float] = {}
                for x, t in (row.get("first_seen_s") or {}).items():
                    k = renormalise(x)
                    firsts[k] = min(t, firsts.get(k, t))
                row["first_seen_s"] = firsts
    before = {arm: o["signatures"] for arm, o in res["overall"].items()}
    res["overall"] = overall_of(list(res["apis"]), res["arms"], res["apis"])
    recount = ("Signatures recounted with element type names and the sign of numbers normalised (`--resign`; "
               "as recorded: " + ", ".join(f"{a} {n}" for a, n in before.items()) + ").")
    old = str(res.get("note") or "").split(" Signatures recounted with")[0].strip()
    res["note"] = f"{old} {recount}".strip()  # the run's own provenance stays
    return res


def merge(paths: list[str]) -> dict:
    """One report from several on disjoint API lists with the same arms and
    settings; the overall figures are recounted over all their APIs."""
    parts = []
    for p in paths:
        with open(p) as f:
            parts.append(json.load(f))
    first = parts[0]
    keys = ("time_budget_s", "train_time_s", "seeds", "exploration", "known_crash_k", "arms")
    for p, r in zip(paths[1:], parts[1:]):
        for k in keys:
            if r.get(k) != first.get(k):
                raise ValueError(f"{p}: {k} is {r.get(k)!r}, not {first.get(k)!r} as in {paths[0]}")
        both = set(r["apis"]) & set(first["apis"])
        if both:
            raise ValueError(f"{p}: {sorted(both)[0]} is in more than one report")
    res = {k: first[k] for k in keys}
    res["jobs"] = first.get("jobs", 1)
    res["apis"] = {a: v for r in parts for a, v in r["apis"].items()}
    res["overall"] = overall_of(list(res["apis"]), res["arms"], res["apis"])
    res["skipped_apis"] = {a: w for r in parts for a, w in (r.get("skipped_apis") or {}).items()}
    res["not_run_apis"] = [a for r in parts for a in (r.get("not_run_apis") or []) if a not in res["apis"]]
    res["command"] = " + ".join(r.get("command", "") for r in parts)
    notes = [r["note"] for r in parts if r.get("note")]
    res["note"] = " ".join(notes) if notes else None
    return res


def markdown(res: dict, command: str) -> str:
    arms = res["arms"]
    lines = ["# Equal-time bug finding: unique crash signatures per arm", "",
             f"`{command}`", "",
             f"Every arm ran {res['time_budget_s']:g} s of wall time per API (seeds: training "
             f"{res['seeds'][0]}, arms {res['seeds'][1]}; one API at a time, its arms back to back, "
             f"on a shared 2-core machine; exploration {res['exploration']:g}, known-crash k {res['known_crash_k']}). "
             f"The filtered arm's models come from a {res['train_time_s']:g} s training campaign per API, "
             "not counted in the arms' time. The clock of every campaign starts on a running worker; "
             "restarts after crashes and timeouts are inside it. CPU-hours: the sum of the arms' "
             "per-API wall times (one campaign drives one worker)."
             + (f" {res['note']}" if res.get("note") else ""), "",
             "| arm | unique signatures | per CPU-hour | crashes | executions | pass rate | valid exec/s | lost vs baseline | new vs baseline |",
             "|---|---|---|---|---|---|---|---|---|"]
    for arm in arms:
        o = res["overall"][arm]
        lines.append(f"| {arm} | {o['signatures']} | {o['signatures_per_cpu_hour']:.0f} | {o['crashes']} | "
                     f"{o['executed']} | {o['pass_rate']:.1%} | {o['valid_exec_per_s']:.2f} | "
                     f"{len(o['lost_vs_baseline'])} | {len(o['new_vs_baseline'])} |")
    marks = sorted({c for arm in arms for c in (res["overall"][arm].get("found_by_s") or {})}, key=float)
    if marks:
        lines += ["", "Discovery over time: unique signatures found within the first t seconds of each API's "
                  "campaign, pooled over APIs (in brackets: per CPU-hour at that budget), and the median "
                  "time from an API's start to each of its signatures.", "",
                  "| arm | " + " | ".join(f"{c} s" for c in marks) + " | median time to signature |",
                  "|---|" + "---|" * (len(marks) + 1)]
        for arm in arms:
            o = res["overall"][arm]
            fb, ph = o.get("found_by_s") or {}, o.get("found_by_s_per_cpu_hour") or {}
            med = o.get("median_time_to_signature_s")
            lines.append(f"| {arm} | " + " | ".join(
                f"{fb[c]} ({ph[c]:.0f})" if c in fb else "-" for c in marks) +
                f" | {'-' if med is None else f'{med:.2f} s'} |")
    if res.get("not_run_apis"):
        lines += ["", "Not run (wall-time limit of this run): " +
                  ", ".join(a.replace("tf.raw_ops.", "") for a in res["not_run_apis"]) + "."]
    if res.get("skipped_apis"):
        lines += ["", "Skipped: " + "; ".join(f"{a}: {r}" for a, r in res["skipped_apis"].items()) + "."]
    lines += ["", "Per API: executions / crashes / unique signatures of each arm.", "",
              "| API | " + " | ".join(arms) + " | model |", "|---|" + "---|" * (len(arms) + 1)]
    for api, r in res["apis"].items():
        cells = [f"{r[a]['executed']} / {r[a]['crash']} / {len(r[a]['signatures'])}" for a in arms]
        lines.append(f"| {api.replace('tf.raw_ops.', '')} | " + " | ".join(cells) +
                     f" | {r['train']['model'] or '-'}{' (crash class)' if r['train'].get('crash_class') else ''} |")
    for arm in arms:
        o = res["overall"][arm]
        for key, title in (("lost_vs_baseline", "lost against the baseline"),
                           ("new_vs_baseline", "not found by the baseline")):
            if o[key] and arm != "baseline":
                lines += ["", f"Signatures {title} ({arm}):", ""]
                lines += [f"- {api.replace('tf.raw_ops.', '')}: `{s[:150]}`" for api, s in o[key]]
    return "\n".join(lines) + "\n"


def render(json_path: str, md_path: str, command: str) -> None:
    """Rewrite the Markdown report from the JSON one."""
    with open(json_path) as f:
        res = json.load(f)
    with open(md_path, "w") as f:
        f.write(markdown(res, res.get("command", command)))


def _rewrite(make, json_path: str, failing: str) -> int:
    """Write the report ``make()`` returns to ``json_path`` and its .md
    beside it (runs nothing); a report that cannot be read is one line, exit 2."""
    try:
        res = make()
    except (OSError, ValueError, KeyError) as e:
        print(f"bug_finding: {failing}: {e}", file=sys.stderr)
        return 2
    with open(json_path, "w") as f:
        json.dump(res, f, indent=1)
    render(json_path, os.path.splitext(json_path)[0] + ".md", res.get("command", ""))
    return 0


def main(argv=None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--time-budget", type=float, default=25.0, help="seconds of wall time per API and arm")
    ap.add_argument("--train-time", type=float, default=25.0, help="seconds per API of the training campaign")
    ap.add_argument("--apis", default=None, help="comma-separated APIs (default: issue 11's list)")
    ap.add_argument("--arms", default=None, help="comma-separated arms of baseline, filtered, online, "
                    "learned+filter (default: all available but online)")
    ap.add_argument("--max-wall", type=float, default=None, metavar="SECONDS",
                    help="start no further API after this much wall time (the report names the APIs covered)")
    ap.add_argument("--seed-train", type=int, default=1)
    ap.add_argument("--seed", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=10.0)
    ap.add_argument("--exploration", type=float, default=0.05)
    ap.add_argument("--known-crash-k", type=int, default=3)
    ap.add_argument("--acetest-data", default=DATA)
    ap.add_argument("--out", default=os.path.join(REPO, "runs", "bug-finding"))
    ap.add_argument("--report-dir", default=HERE)
    ap.add_argument("--resign", metavar="JSON", default=None,
                    help="recount a finished report's signatures with the current normalisation; "
                         "writes JSON and its .md beside it, runs nothing")
    ap.add_argument("--merge", metavar="JSON", nargs="+", default=None,
                    help="join reports of the same arms and settings on disjoint API lists (runs of the "
                         "same code split over several invocations) into --report-dir; runs nothing")
    args = ap.parse_args(argv)
    if args.merge:
        return _rewrite(lambda: merge(args.merge), os.path.join(args.report_dir, "bug_finding.json"),
                        "cannot merge")
    if args.resign:
        return _rewrite(lambda: resign(args.resign), args.resign, f"cannot recount {args.resign}")
    if not args.time_budget > 0 or not args.train_time > 0:
        print("bug_finding: --time-budget and --train-time must be positive", file=sys.stderr)
        return 2
    from acetest_ml.spec import get_spec
    from acetest_ml.errors import UserError
    apis = args.apis.split(",") if args.apis else list(APIS)
    usable, skipped = [], {}
    for a in apis:
        try:
            spec = get_spec(a)
        except UserError as e:
            skipped[a] = str(e)
            continue
        if spec.unsupported:
            skipped[a] = spec.unsupported
        else:
            usable.append(a)
    ace = _acetest_apis(args.acetest_data)
    by_api = {a: "acetest" for a in usable if a in ace}
    os.makedirs(args.out, exist_ok=True)
    models_yaml = _models_yaml(args.out)
    _log(f"{len(usable)} APIs ({len(by_api)} on ACETest constraints); {args.time_budget:g} s per API "
         f"and arm; skipped: {', '.join(skipped) or 'none'}")
    from acetest_ml.model import safe_name
    from acetest_ml.train import train_all
    workers = _Workers(args.timeout, os.path.join(args.out, "logs"))
    arm_cfgs = _arm_configs(args, models_yaml)
    train: dict = {"apis": {}}
    rep: dict = {}
    arms: dict = {arm: {"apis": {}} for arm in arm_cfgs}
    done: list[str] = []
    not_run: list[str] = []
    try:
        # API by API, every arm back to back: the shared machine's load is
        # about the same for the arms of one API
        t_start = time.time()
        for i, api in enumerate(usable, 1):
            if args.max_wall is not None and time.time() - t_start > args.max_wall:
                not_run[:] = usable[i - 1:]
                _log(f"--max-wall {args.max_wall:g} s reached: {len(not_run)} APIs not run")
                break
            _log(f"{i}/{len(usable)} {api}: training campaign ({args.train_time:g} s)")
            tdir = os.path.join(args.out, "train", safe_name(api))
            t = _campaign(args, api, by_api, tdir, args.seed_train, args.train_time, workers)
            train["apis"].update(t["apis"])
            if t["apis"].get(api, {}).get("executed"):
                rep.update(train_all(tdir, models_yaml, [api], os.path.join(args.out, "models"),
                                     min_per_class=5))
            r = rep.get(api, {})
            if r.get("status") == "trained":
                with open(r["model"]) as f:
                    r["crash_class"] = 2 in json.load(f).get("classes", [])
            for arm, kw in arm_cfgs.items():
                adir = os.path.join(args.out, arm.replace("+", "_"), safe_name(api))
                s = _campaign(args, api, by_api, adir, args.seed, args.time_budget, workers, **kw)
                if api in s["apis"]:
                    s["apis"][api]["first_seen_s"] = first_seen(adir, api)
                arms[arm]["apis"].update(s["apis"])
                v = s["apis"].get(api, {})
                _log(f"  {arm}: {v.get('executed', 0)} runs, {v.get('crash', 0)} crashes, "
                     f"{len(v.get('crash_signatures') or [])} signatures")
            done.append(api)
            write_report(args, argv, done, arms, train, rep, skipped, usable[i:])  # partial results survive
    finally:
        workers.close()
    print(write_report(args, argv, done, arms, train, rep, skipped, not_run))
    return 0


def write_report(args, argv, apis, arms, train, rep, skipped, not_run) -> str:
    res = build(apis, arms, train, rep, args)
    res["skipped_apis"] = skipped
    res["not_run_apis"] = not_run
    cmd = "python benchmarks/bug_finding.py " + " ".join(argv if argv is not None else sys.argv[1:])
    res["command"] = cmd.strip()
    os.makedirs(args.report_dir, exist_ok=True)
    with open(os.path.join(args.report_dir, "bug_finding.json"), "w") as f:
        json.dump(res, f, indent=1)
    md = markdown(res, res["command"])
    with open(os.path.join(args.report_dir, "bug_finding.md"), "w") as f:
        f.write(md)
    return md


if __name__ == "__main__":
    sys.exit(main())
