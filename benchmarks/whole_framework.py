"""Whole-framework campaigns: --jobs N on this machine against --ray local
with N worker processes, same seed and budget.

    python benchmarks/whole_framework.py                      # --all TF and torch, 50 runs per API
    python benchmarks/whole_framework.py --sample 40          # a deterministic 40-API subset per framework
    python benchmarks/whole_framework.py --sample torch=400   # every TF API, 400 torch APIs

Per framework and mode: wall time, executed runs per second, valid runs per
second, APIs completed; and whether both modes recorded identical records
(same inputs and decisions; and which rows got another outcome: a timeout is
a wall-clock verdict, and a few ops are not deterministic for one input, e.g.
ones reading uninitialised memory or keeping state between calls; those rows
are listed with both messages). Writes
``benchmarks/whole_framework.json`` and ``.md`` (or ``--write-to DIR``).
"""
from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from acetest_ml.campaign import CampaignConfig, run_campaign  # noqa: E402


def supported(framework: str) -> list[str]:
    from acetest_ml.spec import load_specs
    return sorted(n for n, s in load_specs(framework).items() if s.supported)


def api_list(framework: str, sample: int | None) -> list[str]:
    apis = supported(framework)
    if sample and sample < len(apis):
        step = len(apis) / sample  # evenly spaced over the sorted names: deterministic
        apis = [apis[int(i * step)] for i in range(sample)]
    return apis


def records(out: str) -> dict:
    db = sqlite3.connect(os.path.join(out, "runs.sqlite"))
    try:
        return {(a, s, i): (inp, d, o) for a, s, i, inp, d, o in db.execute(
            "SELECT api, seed, idx, input, decision, outcome FROM candidates")}
    finally:
        db.close()


def one(framework: str, apis: list[str], mode: str, args, root: str) -> dict:
    out = os.path.join(root, f"{framework}-{mode}")
    done_file = os.path.join(out, "bench_result.json")
    if os.path.isfile(done_file):  # a finished mode of an earlier invocation with the same --work
        with open(done_file) as f:
            prev = json.load(f)
        if (prev.get("budget"), prev.get("seed"), prev.get("apis")) == (args.budget, args.seed, len(apis)):
            return prev
    cfg = CampaignConfig(apis=apis, out=out, budget=args.budget, seed=args.seed, framework=framework,
                         jobs=args.jobs, timeout=args.timeout)
    t = time.time()
    s = run_campaign(cfg, show_progress=not args.no_progress,
                     ray_address="local" if mode == "ray" else None)
    wall = time.time() - t
    o = s["overall"]
    done = sum(1 for v in s["apis"].values() if v.get("status") == "done")
    result = {"out": out, "wall_s": wall, "executed": o["executed"], "passed": o["passed"],
            "exec_per_s": o["executed"] / wall, "valid_exec_per_s": o["passed"] / wall,
            "apis": len(apis), "apis_completed": done, "apis_skipped": o["apis_skipped"],
            "apis_error": o.get("apis_error", 0), "pooled_pass_rate": o["pooled_pass_rate"],
            "crash_signatures": len(o["crash_signatures"]), "budget": args.budget, "seed": args.seed}
    with open(done_file, "w") as f:
        json.dump(result, f, indent=1)
    return result


def compare(a: str, b: str) -> dict:
    ra, rb = records(a), records(b)
    common = ra.keys() & rb.keys()
    inputs = [k for k in common if ra[k][:2] != rb[k][:2]]  # input or decision
    outcome = sorted(k for k in common if ra[k][:2] == rb[k][:2] and ra[k][2] != rb[k][2])
    timeout_only = [k for k in outcome if "timeout" in (ra[k][2], rb[k][2])]
    ma, mb = messages(a, outcome), messages(b, outcome)
    return {"rows": [len(ra), len(rb)], "same_keys": ra.keys() == rb.keys(),
            "differing_inputs": len(inputs),
            "differing_rows": len(inputs) + len(outcome), "differing_rows_with_a_timeout": len(timeout_only),
            "differing_apis": sorted({k[0] for k in inputs} | {k[0] for k in outcome}
                                     | {k[0] for k in ra.keys() ^ rb.keys()}),
            "outcome_only": [{"api": k[0], "idx": k[2], "outcomes": [ra[k][2], rb[k][2]],
                              "messages": [ma.get(k, ""), mb.get(k, "")]} for k in outcome],
            "identical": ra == rb,
            "identical_inputs": ra.keys() == rb.keys() and not inputs}


def messages(out: str, keys: list) -> dict:
    db = sqlite3.connect(os.path.join(out, "runs.sqlite"))
    try:
        got = {}
        for k in keys:
            row = db.execute("SELECT message, signature FROM candidates WHERE api=? AND seed=? AND idx=?", k).fetchone()
            got[k] = ((row[1] or row[0] or "") if row else "")[:160]
        return got
    finally:
        db.close()


def markdown(res: dict) -> str:
    lines = [f"# Whole-framework campaigns: --jobs {res['jobs']} vs --ray local ({res['jobs']} workers)",
             "", f"Budget {res['budget']} runs per API, seed {res['seed']}. APIs: "
             + "; ".join(f"{fw}: " + (f"{len(r['apis'])} of {r['supported']} supported (deterministic sample, evenly "
                                       "spaced over the sorted names)" if len(r["apis"]) < r["supported"]
                                       else f"all {r['supported']} supported")
                         + f", measured {r.get('when', res['when'])}"
                         for fw, r in res["frameworks"].items()) + ".", "",
             "| framework | mode | APIs | completed | skipped | error | wall s | executed | exec/s | valid exec/s | pooled pass |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for fw, r in res["frameworks"].items():
        for mode in ("jobs", "ray"):
            m = r[mode]
            lines.append(f"| {fw} | {'--jobs ' + str(res['jobs']) if mode == 'jobs' else '--ray local'} | "
                         f"{m['apis']} | {m['apis_completed']} | {m['apis_skipped']} | {m['apis_error']} | "
                         f"{m['wall_s']:.0f} | {m['executed']} | {m['exec_per_s']:.1f} | "
                         f"{m['valid_exec_per_s']:.1f} | {m['pooled_pass_rate']:.1%} |")
    lines += ["", "Records of the two modes (inputs and filter decisions; outcomes):", ""]
    for fw, r in res["frameworks"].items():
        c = r["compare"]
        same_inputs = c.get("identical_inputs", c["identical"])
        lines.append(f"- {fw}: inputs and decisions {'identical' if same_inputs else 'NOT identical'} "
                     f"({c['rows'][0]} / {c['rows'][1]} rows, {c.get('differing_inputs', 0)} differing); "
                     f"outcomes {'identical' if c['identical'] else 'differ'} in "
                     f"{len(c.get('outcome_only', []))} rows, {c['differing_rows_with_a_timeout']} of them "
                     f"involving a timeout")
        for d in c.get("outcome_only", []):
            lines.append(f"  - {d['api']} run {d['idx']}: {d['outcomes'][0]} vs {d['outcomes'][1]} "
                         f"(`{d['messages'][0][:90]}` / `{d['messages'][1][:90]}`)")
    small = {fw: r for fw, r in res["frameworks"].items() if len(r["apis"]) <= 40 and len(r["apis"]) < r["supported"]}
    if small:
        lines += ["", "The sample:", ""]
        for fw, r in small.items():
            lines.append(f"- {fw}: {', '.join(r['apis'])}")
    notes = [f"{fw}: {r['note']}" for fw, r in res["frameworks"].items() if r.get("note")]
    if notes:
        lines += [""] + [f"- {n}" for n in notes]
    elif res.get("note"):
        lines += ["", res["note"]]
    return "\n".join(lines) + "\n"


def merge_earlier(res: dict, path: str) -> None:
    """Keep the frameworks this invocation did not run from an earlier report
    with the same budget and seed (each framework carries its own date and
    note), so `--framework torch` updates the torch rows only."""
    try:
        with open(path) as f:
            old = json.load(f)
    except (OSError, ValueError):
        return
    if (old.get("budget"), old.get("seed"), old.get("jobs")) != (res["budget"], res["seed"], res["jobs"]):
        return
    for fw, r in (old.get("frameworks") or {}).items():
        if fw not in res["frameworks"]:
            r.setdefault("when", old.get("when"))
            r.setdefault("note", old.get("note"))
            res["frameworks"][fw] = r
    res["frameworks"] = {fw: res["frameworks"][fw] for fw in ("tf", "torch") if fw in res["frameworks"]}


def parse_samples(values: list[str], p: argparse.ArgumentParser) -> dict:
    out: dict = {}
    for v in values:
        fw, _, n = v.rpartition("=")
        if fw not in ("", "tf", "torch") or not n.isdigit() or int(n) <= 0:
            p.error(f"--sample {v!r}: use N or tf=N / torch=N with N > 0")
        out[fw or "*"] = int(n)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--framework", action="append", choices=["tf", "torch"])
    p.add_argument("--budget", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("--sample", action="append", default=[], metavar="[FW=]N",
                   help="deterministic subset of N APIs per framework (FW=N: that framework only)")
    p.add_argument("--work", default=None, help="folder for the campaign folders (default: a temp dir)")
    p.add_argument("--write-to", default=HERE)
    p.add_argument("--note", default=None, help="a line added to the Markdown (e.g. machine load)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    root = args.work or tempfile.mkdtemp(prefix="whole-framework-")
    samples = parse_samples(args.sample, p)
    res = {"budget": args.budget, "seed": args.seed, "jobs": args.jobs, "sample": samples,
           "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "note": args.note,
           "work": root, "frameworks": {}}
    for fw in args.framework or ["tf", "torch"]:
        apis = api_list(fw, samples.get(fw, samples.get("*")))
        r = {"apis": apis, "supported": len(supported(fw)), "jobs": one(fw, apis, "jobs", args, root), "ray": one(fw, apis, "ray", args, root)}
        r["compare"] = compare(r["jobs"]["out"], r["ray"]["out"])
        r["when"], r["note"] = res["when"], args.note
        res["frameworks"][fw] = r
        print(json.dumps({k: v for k, v in r.items() if k != "apis"}, indent=1))
    os.makedirs(args.write_to, exist_ok=True)
    merge_earlier(res, os.path.join(args.write_to, "whole_framework.json"))
    with open(os.path.join(args.write_to, "whole_framework.json"), "w") as f:
        json.dump(res, f, indent=1)
    with open(os.path.join(args.write_to, "whole_framework.md"), "w") as f:
        f.write(markdown(res))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
