"""The upstream scope of the benchmark: the original ACETest Tester beside our
engine, per ACETest-constraint API of ``benchmarks/apis.yaml``.

    python -m acetest_ml.bench --upstream [--rounds 300] [--api A ...] [--out DIR]
                                [--acetest-data DIR] [--acetest-home DIR] [--publish]

Arms, each with the same round count per API:

=================  ==========================================================
``upstream``       upstream's Tester alone (seed B)
``up-offline``     upstream + hook, models trained on upstream's own runs
                   (an unfiltered upstream run with seed A and ``--collect``)
``up-online``      upstream + hook, online learner (no prior data; seed B)
``ours``           our engine, ``--constraints acetest``, unfiltered (seed B)
``ours-online``    our engine, ACETest constraints, online filter (seed B)
=================  ==========================================================

Each upstream run works on a private copy of the Tester (its ``src`` and the
API's data files), because upstream rewrites its data files in place. Pass
rate by upstream's definition is ``(runs - invalid) / runs``; ours counts
only runs that returned normally. The invalid-run cut of an arm is
``1 - invalid share(arm) / invalid share(upstream)``, pooled over the APIs
where upstream passes at least once. Every arm's result is a JSON file under
``<out>/arms``; a rerun with the same ``--out`` skips the finished ones.
"""
from __future__ import annotations

import csv
import glob
import io
import json
import os
import shutil
import sys
import time
from typing import Optional

import yaml

from ..errors import UserError
from ..execute.supervisor import crash_signature
from ..settings import DEFAULT_MODELS

UPSTREAM_ARMS = ("upstream", "up-offline", "up-online")
OUR_ARMS = ("ours", "ours-online")
ARMS = UPSTREAM_ARMS + OUR_ARMS
LABELS = {"upstream": "upstream", "up-offline": "upstream + hook (offline)",
          "up-online": "upstream + hook (online)", "ours": "our ACETest mode",
          "ours-online": "our ACETest mode + online filter"}


# ------------------------------------------------------------ the checkout

def find_checkout(acetest_home: Optional[str]) -> Optional[str]:
    """The upstream checkout (``--acetest-home``, ``$ACETEST_HOME``, the
    submodule), or None when there is none."""
    from ..upstream.runner import UpstreamSetupError, locate_home
    try:
        return locate_home(acetest_home)
    except UpstreamSetupError:
        return None


def data_root(home: str, acetest_data: Optional[str]) -> str:
    """Where the TF constraint data is: ``acetest_data/tensorflow`` when it has
    one (``../shared/acetest-data``), else the checkout's own."""
    if acetest_data and os.path.isfile(os.path.join(acetest_data, "tensorflow", "API2OP.csv")):
        return os.path.join(acetest_data, "tensorflow")
    own = os.path.join(home, "Tester", "data", "tensorflow")
    if os.path.isfile(os.path.join(own, "API2OP.csv")):
        return own
    raise UserError(f"no ACETest TensorFlow data in {acetest_data} or {own}")


def op_of(data: str, api: str) -> Optional[str]:
    with open(os.path.join(data, "API2OP.csv")) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2 and parts[0] == api:
                return parts[1]
    return None


def private_home(home: str, data: str, api: str, dest: str) -> str:
    """A Tester with upstream's ``src`` and only ``api``'s data files, at ``dest``."""
    if os.path.exists(dest):
        shutil.rmtree(dest)
    shutil.copytree(os.path.join(home, "Tester", "src"), os.path.join(dest, "Tester", "src"),
                    ignore=shutil.ignore_patterns("output_*", "__pycache__"))
    tf = os.path.join(dest, "Tester", "data", "tensorflow")
    os.makedirs(os.path.join(tf, "op_json"))
    os.makedirs(os.path.join(tf, "constraints"))
    shutil.copy(os.path.join(data, "API2OP.csv"), os.path.join(tf, "API2OP.csv"))
    name = api.split(".")[-1] + ".json"
    shutil.copy(os.path.join(data, "op_json", name), os.path.join(tf, "op_json", name))
    op = op_of(data, api)
    if op and os.path.isdir(os.path.join(data, "constraints", op)):
        shutil.copytree(os.path.join(data, "constraints", op), os.path.join(tf, "constraints", op))
    return dest


# ------------------------------------------------------------ one arm

def _crash_signatures(work: str, api: str) -> list[str]:
    sigs = set()
    for path in glob.glob(os.path.join(work, "output_tf_*", api, "crash", "crash_summary.csv")):
        with open(path) as f:
            for row in csv.reader(f):
                if len(row) >= 4:
                    try:
                        sigs.add(crash_signature(int(row[3].strip()), ""))
                    except ValueError:
                        sigs.add("crash (exit status unknown)")
    return sorted(sigs)


def _arm_row(runs: int, invalid: int, crash: int, timeout: int, oom: int, seconds: float,
             wall: float, sigs: list[str], **extra) -> dict:
    passed = max(0, runs - invalid - crash - timeout - oom)
    return dict(runs=runs, invalid=invalid, crash=crash, timeout=timeout, oom=oom, passed=passed,
                up_pass_rate=(runs - invalid) / runs if runs else None,
                pass_rate=passed / runs if runs else None,
                seconds=seconds, wall_s=wall,
                runs_per_s=runs / seconds if seconds > 0 else None,
                valid_per_s=(runs - invalid) / seconds if seconds > 0 else None,
                crash_signatures=sigs, **extra)


def run_upstream_arm(arm: str, api: str, home: str, data: str, rounds: int, seed: int, work_dir: str, *,
                     models: Optional[str], collect: Optional[str] = None, warmup: int = 10,
                     exploration: float = 0.05, reallocate: bool = True, round_timeout: int = 10,
                     repair: bool = True) -> dict:
    """One upstream run of ``api``; its res.csv row and statistics as a dict."""
    from ..upstream.runner import run_upstream
    priv = private_home(home, data, api, os.path.join(work_dir, "home"))
    work = os.path.join(work_dir, "work")
    if os.path.exists(work):
        shutil.rmtree(work)
    mode = {"upstream": None, "up-offline": "models", "up-online": "online"}[arm]
    out = io.StringIO()
    t0 = time.time()
    code = run_upstream([f"--target_api={api}", f"--test_round={rounds}", "--mode=cpu_ori", "--framework=tf",
                         f"--round_timeout={int(round_timeout)}", f"--work_path={work}"], ml_filter=mode, models=models or DEFAULT_MODELS,
                        acetest_home=priv, seed=seed, warmup=warmup, exploration=exploration,
                        out=out, log=os.path.join(work_dir, "upstream.log"), collect=collect,
                        reallocate=reallocate, repair=repair)
    wall = time.time() - t0
    from ..upstream.runner import collect_results
    res = collect_results(arm, work, "tf", {})
    rows = [r for r in res.rows if r["api"] == api]
    if code != 0 or not rows:
        msgs = "; ".join(res.messages) or out.getvalue().strip().splitlines()[-1:] or ["no result"]
        return {"runs": 0, "error": str(msgs if isinstance(msgs, str) else msgs[0])[:300], "wall_s": wall}
    r = rows[0]
    row = _arm_row(r["runs"], r["invalid"], r["crash"], r["timeout"], r["oom"], r["seconds"], wall,
                   _crash_signatures(work, api), samples=r["samples"])
    st = res.stats.get(api)
    if st:
        row["filter"] = {k: st.get(k) for k in ("scorer", "threshold", "generated", "discarded", "accepted",
                                                 "explored", "forced", "unfiltered", "samples_scored",
                                                 "samples_rejected", "rounds_moved", "rounds_spent_at_end",
                                                 "score_us_per_candidate", "candidates_per_run", "repaired",
                                                 "rule_rejected", "repair")}
        if "online" in st:
            row["filter"]["trainings"] = st["online"].get("trainings")
    return row


def run_our_arm(arm: str, api: str, acetest_data: str, rounds: int, seed: int, work_dir: str,
                models: str, extensions: bool = False) -> dict:
    """``extensions``: our ACETest mode with --acetest-extensions (default: faithful)."""
    from ..campaign import CampaignConfig, run_campaign
    if os.path.exists(work_dir):
        shutil.rmtree(work_dir)
    cfg = CampaignConfig(apis=[api], out=work_dir, budget=rounds, seed=seed, constraints="acetest",
                         acetest_data=acetest_data, jobs=1, models=models, acetest_extensions=extensions,
                         ml_filter="online" if arm == "ours-online" else None)
    t0 = time.time()
    summary = run_campaign(cfg, show_progress=False)
    wall = time.time() - t0
    s = summary["apis"].get(api, {})
    if not s.get("executed"):
        return {"runs": 0, "error": str(s.get("reason", "nothing executed"))[:300], "wall_s": wall}
    return _arm_row(s["executed"], s["invalid"], s["crash"], s["timeout"], 0, s.get("elapsed_s") or wall, wall,
                    list(s.get("crash_signatures", [])), top_errors=s.get("top_errors", [])[:2])


def models_yaml_for(out: str, base_yaml: str) -> str:
    """A registry YAML with the settings of ``base_yaml`` whose models live in
    ``<out>/models`` (models trained on upstream's runs)."""
    doc: dict = {}
    if os.path.isfile(base_yaml):
        with open(base_yaml) as f:
            doc = yaml.safe_load(f) or {}
    doc.pop("apis", None)
    doc["models_dir"] = os.path.join(os.path.abspath(out), "models")
    path = os.path.join(out, "upstream_models.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(doc, f, sort_keys=False)
    return path


# ------------------------------------------------------------ the scope

def run_scope(apis: list[str], home: str, acetest_data: str, out: str, *, rounds: int = 300,
              seed_train: int = 1, seed_eval: int = 2, arms: tuple = ARMS, base_models: str = DEFAULT_MODELS,
              warmup: int = 10, round_timeout: int = 10, progress=print, report_only: bool = False) -> dict:
    """Run (or, with ``report_only``, only read) every arm of every API."""
    data = data_root(home, acetest_data)
    os.makedirs(os.path.join(out, "arms"), exist_ok=True)
    models = models_yaml_for(out, base_models)
    results: dict[str, dict] = {}
    for i, api in enumerate(apis, 1):
        if op_of(data, api) is None or not os.path.isfile(os.path.join(data, "op_json", api.split(".")[-1] + ".json")):
            results[api] = {"skipped": "not in the ACETest data"}
            continue
        results[api] = {}
        for arm in arms:
            path = os.path.join(out, "arms", f"{api}.{arm}.json")
            if os.path.isfile(path):
                with open(path) as f:
                    results[api][arm] = json.load(f)
                continue
            if report_only:
                continue
            progress(f"[{i}/{len(apis)}] {api}: {arm} ...")
            wd = os.path.join(out, "work", api, arm)
            if arm == "up-offline":
                row = _offline_arm(api, home, data, rounds, seed_train, seed_eval, out, models, warmup,
                                   round_timeout)
            elif arm in UPSTREAM_ARMS:
                row = run_upstream_arm(arm, api, home, data, rounds, seed_eval, wd, models=models, warmup=warmup,
                                       round_timeout=round_timeout)
            else:
                row = run_our_arm(arm, api, acetest_data, rounds, seed_eval, wd, base_models)
            with open(path, "w") as f:
                json.dump(row, f, indent=1)
            results[api][arm] = row
            progress(f"    {_short(row)}")
    doc = {"rounds": rounds, "seeds": {"train": seed_train, "eval": seed_eval}, "round_timeout": round_timeout,
           "apis": results,
           "pooled": pooled(results, arms), "home": home, "data": data}
    return doc


def _offline_arm(api, home, data, rounds, seed_train, seed_eval, out, models, warmup, round_timeout=10) -> dict:
    """Train on an unfiltered upstream run of another seed (recorded with
    --collect), then run upstream with those models."""
    from ..train import train_all
    collect = os.path.join(out, "collect")
    train_wd = os.path.join(out, "work", api, "up-train")
    train_row = run_upstream_arm("upstream", api, home, data, rounds, seed_train, train_wd, models=models,
                                 collect=collect, round_timeout=round_timeout)
    # the training run is an unfiltered upstream run of its own seed: kept beside the arms
    # so the parity report can count it as that seed's upstream arm
    with open(os.path.join(out, "arms", f"{api}.up-train.s{seed_train}.json"), "w") as f:
        json.dump(train_row, f, indent=1)
    rep = train_all(collect, models, apis=[api]).get(api, {}) if train_row.get("runs") else {}
    wd = os.path.join(out, "work", api, "up-offline")
    if rep.get("status") != "trained":
        row = run_upstream_arm("upstream", api, home, data, rounds, seed_eval, wd, models=models,
                               round_timeout=round_timeout)
        row["note"] = "no model (" + str(rep.get("reason") or train_row.get("error") or "not trained")[:200] + \
            "): ran unfiltered"
    else:
        row = run_upstream_arm("up-offline", api, home, data, rounds, seed_eval, wd, models=models,
                               round_timeout=round_timeout)
        row["model"] = {"n": rep.get("n"), "valid": rep.get("valid"), "invalid": rep.get("invalid"),
                        "validation": rep.get("validation")}
    row["train_run"] = {k: train_row.get(k) for k in ("runs", "invalid", "up_pass_rate")}
    return row


def _short(row: dict) -> str:
    if not row.get("runs"):
        return "no runs: " + str(row.get("error", ""))
    return (f"{row['runs']} runs, upstream-def pass {100 * row['up_pass_rate']:.1f}%, pass {100 * row['pass_rate']:.1f}%, "
            f"{row['runs_per_s'] or 0:.1f} runs/s")


def pooled(results: dict, arms=ARMS) -> dict:
    out: dict[str, dict] = {}
    base_ok = [a for a, r in results.items() if r.get("upstream", {}).get("runs")
               and r["upstream"]["runs"] > r["upstream"]["invalid"]]
    base_normal = [a for a in base_ok if results[a]["upstream"].get("passed", 0) > 0]
    for arm in arms:
        rows = [r[arm] for r in results.values() if r.get(arm, {}).get("runs")]
        runs = sum(r["runs"] for r in rows)
        inv = sum(r["invalid"] for r in rows)
        passed = sum(r["passed"] for r in rows)
        secs = sum(r["seconds"] or 0 for r in rows)
        d = {"apis": len(rows), "runs": runs, "invalid": inv,
             "up_pass_rate": (runs - inv) / runs if runs else None,
             "pass_rate": passed / runs if runs else None,
             "runs_per_s": runs / secs if secs else None,
             "valid_per_s": (runs - inv) / secs if secs else None,
             "crash_signatures": sorted({s for r in rows for s in r.get("crash_signatures", [])})}
        # invalid-run cut against upstream, over APIs where upstream passes at least
        # once by its own definition (an OOM counts), and over those where one of its
        # runs returned normally (a filter has something to find)
        for key, base in (("invalid_cut", base_ok), ("invalid_cut_normal", base_normal)):
            both = [a for a in base if results[a].get(arm, {}).get("runs")]
            b_runs = sum(results[a]["upstream"]["runs"] for a in both)
            b_inv = sum(results[a]["upstream"]["invalid"] for a in both)
            a_runs = sum(results[a][arm]["runs"] for a in both)
            a_inv = sum(results[a][arm]["invalid"] for a in both)
            if b_runs and a_runs and b_inv:
                d[key] = 1 - (a_inv / a_runs) / (b_inv / b_runs)
                d[key + "_apis"] = len(both)
        out[arm] = d
    return out


# ------------------------------------------------------------ report

def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _num(x) -> str:
    return "n/a" if x is None else f"{x:.1f}"


def markdown(doc: dict, arms=ARMS, command: str = "") -> str:
    lines = ["# Upstream scope: ACETest's Tester beside the hook and our engine", "",
             f"{doc['rounds']} rounds per API and arm; upstream seeds: train {doc['seeds']['train']}, "
             f"eval {doc['seeds']['eval']}; upstream round timeout {doc.get('round_timeout', 10)} s. " + (f"Command: `{command}`." if command else ""), "",
             "Arms: " + "; ".join(f"`{a}` = {LABELS[a]}" for a in arms) + ". "
             "`up pass` is upstream's definition ((runs - invalid) / runs); `pass` counts runs that "
             "returned normally (crash, timeout and OOM excluded). `cut` = invalid-run cut against `upstream`, "
             "over the APIs where `upstream` passes at least once by its definition (an OOM counts), "
             "and over those where one of its runs returned normally.", "",
             "## Pooled", "",
             "| arm | APIs | runs | up pass | pass | invalid-run cut | cut, APIs with a normal return | runs/s | "
             "valid runs/s | crash signatures |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for arm in arms:
        p = doc["pooled"].get(arm, {})
        cut = p.get("invalid_cut")
        cut_s = f"{100 * cut:.1f}% ({p.get('invalid_cut_apis')} APIs)" if cut is not None else ""
        cut_n = p.get("invalid_cut_normal")
        cut_ns = f"{100 * cut_n:.1f}% ({p.get('invalid_cut_normal_apis')} APIs)" if cut_n is not None else ""
        lines.append(f"| {arm} | {p.get('apis', 0)} | {p.get('runs', 0)} | {_pct(p.get('up_pass_rate'))} | "
                     f"{_pct(p.get('pass_rate'))} | {cut_s} | {cut_ns} | {_num(p.get('runs_per_s'))} | "
                     f"{_num(p.get('valid_per_s'))} | {len(p.get('crash_signatures', []))} |")
    lines += ["", "## Per API (up pass / pass / runs per s)", "",
              "| API | " + " | ".join(arms) + " |", "|---|" + "---|" * len(arms)]
    notes = []
    for api, r in doc["apis"].items():
        if "skipped" in r:
            lines.append(f"| {api} | " + " | ".join(["skipped"] * len(arms)) + " |")
            continue
        cells = []
        for arm in arms:
            x = r.get(arm)
            if not x:
                cells.append("not run")
            elif not x.get("runs"):
                cells.append("no runs")
                notes.append(f"- {api} {arm}: {x.get('error', '')}")
            else:
                cells.append(f"{_pct(x['up_pass_rate'])} / {_pct(x['pass_rate'])} / {_num(x['runs_per_s'])}")
                if x.get("note"):
                    notes.append(f"- {api} {arm}: {x['note']}")
        lines.append(f"| {api} | " + " | ".join(cells) + " |")
    sigs = {arm: doc["pooled"].get(arm, {}).get("crash_signatures", []) for arm in arms}
    lines += ["", "Crash signatures: " + "; ".join(f"{a}: {', '.join(s) or 'none'}" for a, s in sigs.items())]
    if notes:
        lines += ["", "Notes:", ""] + notes
    return "\n".join(lines) + "\n"


def plot(doc: dict, path: str, arms=ARMS) -> Optional[str]:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    apis = [a for a, r in doc["apis"].items() if "skipped" not in r]
    if not apis:
        return None
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(apis) + 2), 4))
    w = 0.8 / len(arms)
    for k, arm in enumerate(arms):
        vals = [100 * (doc["apis"][a].get(arm, {}).get("up_pass_rate") or 0) for a in apis]
        ax.bar([i + k * w for i in range(len(apis))], vals, w, label=arm)
    ax.set_xticks([i + 0.4 - w / 2 for i in range(len(apis))])
    ax.set_xticklabels([a.split(".")[-1] for a in apis], rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("pass rate, upstream's definition (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write(doc: dict, out: str, arms=ARMS, command: str = "", publish_dir: Optional[str] = None) -> list[str]:
    paths = [os.path.join(out, "upstream_scope.json"), os.path.join(out, "upstream_scope.md"),
             os.path.join(out, "upstream_scope.png")]
    with open(paths[0], "w") as f:
        json.dump(doc, f, indent=1)
    with open(paths[1], "w") as f:
        f.write(markdown(doc, arms, command))
    if plot(doc, paths[2], arms) is None:
        paths.pop()
    if publish_dir:
        for p in paths:
            shutil.copy(p, os.path.join(publish_dir, os.path.basename(p)))
    return paths


def main(args) -> int:
    """``python -m acetest_ml.bench --upstream`` (``args`` from bench's parser)."""
    home = find_checkout(args.acetest_home)
    if home is None:
        print("acetest-ml bench --upstream: no ACETest checkout (set ACETEST_HOME or run "
              "git submodule update --init third_party/ACETest); nothing to do")
        return 0
    from .protocol import load_bench_config
    cfg = load_bench_config(args.config)
    apis = list(args.api) if args.api else list(cfg.acetest_apis)
    if args.rounds < 1:
        raise UserError(f"--rounds must be at least 1, got {args.rounds}")
    arms = tuple(a for a in ARMS if not args.arms or a in args.arms)
    unknown = [a for a in (args.arms or []) if a not in ARMS]
    if unknown:
        raise UserError(f"unknown arm {unknown[0]!r} (arms: {', '.join(ARMS)})")
    out = args.out or os.path.join("benchmarks", "results", "upstream-" + time.strftime("%Y%m%d-%H%M%S"))
    os.makedirs(out, exist_ok=True)
    doc = run_scope(apis, home, args.acetest_data, out, rounds=args.rounds, seed_train=cfg.seed_train,
                    seed_eval=cfg.seed_eval, arms=arms, base_models=cfg.models, round_timeout=args.round_timeout,
                    report_only=args.report_only,
                    progress=lambda m: print(m, file=sys.stderr, flush=True))
    here = os.path.dirname(os.path.abspath(args.config))
    cmd = "python -m acetest_ml.bench " + " ".join(a for a in sys.argv[1:] if a != "--report-only")
    paths = write(doc, out, arms, cmd.strip(), publish_dir=here if args.publish else None)
    print(markdown(doc, arms).split("## Per API")[0])
    print("written: " + ", ".join(paths))
    return 0
