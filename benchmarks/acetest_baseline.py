"""ACETest-constraint baseline (issue 3): an unfiltered campaign of --budget
executions on every API of the ACETest data (MANIFEST.json), on ACETest's
extracted constraints and on our registry-derived constraints, same seed;
writes benchmarks/acetest_baseline.{json,md}.

    python benchmarks/acetest_baseline.py [--data ../shared/acetest-data] [--budget 300]
        [--acetest-runs DIR]   # reuse an existing ACETest-constraint campaign (e.g. the bench's train arm)
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from acetest_ml.campaign import CampaignConfig, run_campaign
from acetest_ml.store import Store
from acetest_ml.summary import summarize


def manifest_apis(data: str) -> list[str]:
    with open(os.path.join(data, "MANIFEST.json")) as f:
        return sorted(json.load(f)["apis"])


def campaign(apis, out, budget, seed, constraints, data, rules=None) -> dict:
    resume = os.path.exists(os.path.join(out, "runs.sqlite"))
    cfg = CampaignConfig(apis=apis, out=out, budget=budget, seed=seed, constraints=constraints,
                         acetest_data=data, rules=rules, jobs=2, resume=resume)
    return run_campaign(cfg, show_progress=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="../shared/acetest-data")
    ap.add_argument("--budget", type=int, default=300)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default="runs/acetest-baseline")
    ap.add_argument("--acetest-runs", default=None)
    args = ap.parse_args()
    apis = manifest_apis(args.data)
    t = time.time()
    if args.acetest_runs:
        with Store(args.acetest_runs, create=False) as st:
            ace = summarize(st)
    else:
        ace = campaign(apis, os.path.join(args.out, "acetest"), args.budget, args.seed, "acetest", args.data)
    reg = campaign(apis, os.path.join(args.out, "registry"), args.budget, args.seed, "registry", args.data)
    rows, top = [], {}
    for api in apis:
        a, r = ace["apis"].get(api, {}), reg["apis"].get(api, {})
        rows.append((api, a, r))
        top[api] = {"acetest": a.get("top_errors", [])[:3], "registry": r.get("top_errors", [])[:3]}

    def pooled(side):
        ex = sum(x.get("executed", 0) for _, *s in rows for x in [s[side]])
        ps = sum(x.get("passed", 0) for _, *s in rows for x in [s[side]])
        return ps / ex if ex else 0.0, ex

    def mean(side):
        v = [s[side].get("pass_rate", 0.0) for _, *s in rows if s[side].get("executed")]
        return sum(v) / len(v) if v else 0.0

    res = {"budget": args.budget, "seed": args.seed, "apis": apis, "wall_s": time.time() - t,
           "acetest": {"pooled_pass_rate": pooled(0)[0], "mean_pass_rate": mean(0), "executed": pooled(0)[1],
                       "crash_signatures": sorted({c for _, a, _r in rows for c in a.get("crash_signatures", [])})},
           "registry": {"pooled_pass_rate": pooled(1)[0], "mean_pass_rate": mean(1), "executed": pooled(1)[1],
                        "crash_signatures": sorted({c for _, _a, r in rows for c in r.get("crash_signatures", [])})},
           "per_api": {api: {"acetest": a, "registry": r} for api, a, r in rows}, "top_errors": top}
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "acetest_baseline.json"), "w") as f:
        json.dump(res, f, indent=1)
    lines = ["# Baseline on ACETest's extracted constraints vs registry-derived constraints", "",
             f"Unfiltered campaigns, {args.budget} executions per API, seed {args.seed}, "
             f"{len(apis)} APIs of `../shared/acetest-data` (MANIFEST.json). "
             "Command: `python benchmarks/acetest_baseline.py`.", "",
             "| API | ACETest pass | invalid | crash | timeout | exec/s | registry pass | invalid | crash | timeout | exec/s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for api, a, r in rows:
        def cells(x):
            if not x.get("executed"):
                return ["skipped: " + str(x.get("reason", ""))[:40], "", "", "", ""]
            return [f"{100 * x['pass_rate']:.1f}%", str(x["invalid"]), str(x["crash"]), str(x["timeout"]),
                    f"{x['exec_per_s']:.1f}"]
        lines.append("| " + " | ".join([api] + cells(a) + cells(r)) + " |")
    lines += ["", f"Pooled pass rate: ACETest {100 * res['acetest']['pooled_pass_rate']:.1f}%, "
              f"registry {100 * res['registry']['pooled_pass_rate']:.1f}%. Mean over APIs: ACETest "
              f"{100 * res['acetest']['mean_pass_rate']:.1f}%, registry {100 * res['registry']['mean_pass_rate']:.1f}%.",
              "", "Crash signatures (ACETest constraints): " + ("; ".join(res["acetest"]["crash_signatures"]) or "none"),
              "", "Crash signatures (registry constraints): " + ("; ".join(res["registry"]["crash_signatures"]) or "none"),
              "", "## Top exception messages (ACETest constraints)", ""]
    for api in apis:
        errs = top[api]["acetest"]
        if errs:
            lines.append(f"- {api}: " + " | ".join(f"{m[:150]} ({n})" for m, n in errs[:2]))
    with open(os.path.join(here, "acetest_baseline.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines[:8 + len(rows) + 2]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
