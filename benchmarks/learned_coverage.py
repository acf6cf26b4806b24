"""Whole-registry coverage with and without learned rules.

For each framework: the supported APIs of its registry (all of them, or a
deterministic sample: the first N by a hash of the name), unfiltered
campaigns of --budget runs per API on registry constraints, once as they are
and once with ``--learn-rules``. Reported per framework and arm: share of
APIs with at least one valid run, share with pass rate >= 50%, pooled pass
rate, executions and valid executions per second (pooled over the APIs'
elapsed time), unique crash signatures, learned rules kept.

    python benchmarks/learned_coverage.py --framework tf --sample 60 --budget 100
    python benchmarks/learned_coverage.py --framework torch --sample 60 --budget 100

Writes ``benchmarks/learned_coverage_<fw>.json`` / ``.md``; the campaign
folders go under ``--work`` (a rerun resumes them).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

from acetest_ml.campaign import CampaignConfig, run_campaign  # noqa: E402
from acetest_ml.spec import load_specs  # noqa: E402

ARMS = (("registry", False), ("learned", True))


def sample_apis(framework: str, n: int | None) -> tuple[list[str], int]:
    names = sorted(k for k, s in load_specs(framework).items() if s.supported)
    if framework == "torch":  # the CLI only calls plain aten names
        names = [k for k in names if ".__" not in k]
    if not n or n >= len(names):
        return names, len(names)
    ranked = sorted(names, key=lambda a: hashlib.sha256(a.encode()).hexdigest())
    return sorted(ranked[:n]), len(names)


def arm_figures(summary: dict) -> dict:
    apis = summary["apis"]
    ran = {a: v for a, v in apis.items() if v.get("executed")}
    n = len(apis)
    executed = sum(v["executed"] for v in ran.values())
    passed = sum(v["passed"] for v in ran.values())
    elapsed = sum(v.get("elapsed_s") or 0.0 for v in ran.values())
    sigs = sorted({s for v in ran.values() for s in v.get("crash_signatures", [])})
    kept = sum((v.get("learned") or {}).get("kept", 0) + (v.get("learned") or {}).get("probation", 0)
               for v in ran.values())
    return {
        "apis": n,
        "apis_run": len(ran),
        "share_with_valid": sum(1 for v in ran.values() if v["passed"]) / n if n else 0.0,
        "share_pass_ge_50": sum(1 for v in ran.values() if v["pass_rate"] >= 0.5) / n if n else 0.0,
        "pooled_pass_rate": passed / executed if executed else 0.0,
        "mean_pass_rate": sum(v["pass_rate"] for v in ran.values()) / n if n else 0.0,
        "executed": executed,
        "passed": passed,
        "exec_per_s": executed / elapsed if elapsed else 0.0,
        "valid_exec_per_s": passed / elapsed if elapsed else 0.0,
        "crash_signatures": len(sigs),
        "signatures": sigs,
        "learned_rules": kept,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--framework", choices=["tf", "torch"], required=True)
    p.add_argument("--sample", type=int, default=None, help="APIs (default: every supported API)")
    p.add_argument("--budget", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--chunk", type=int, default=40,
                   help="APIs per turn: the arms take turns chunk by chunk, so both meet the same load")
    p.add_argument("--max-wall", type=float, default=None, metavar="SECONDS",
                   help="start no new chunk after this many seconds; the report covers the chunks "
                        "both arms finished (rerun to resume)")
    p.add_argument("--work", default=os.path.join(HERE, "results", "learned_coverage"))
    p.add_argument("--report", default=None, help="report base path (default benchmarks/learned_coverage_<fw>)")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args()
    for name in ("sample", "budget", "jobs", "chunk"):
        v = getattr(a, name)
        if v is not None and v < 1:
            print(f"error: --{name} must be >= 1, got {v}", file=sys.stderr)
            return 2
    if os.path.isfile(a.work):
        print(f"error: --work {a.work} is a file, not a folder", file=sys.stderr)
        return 2
    apis, total = sample_apis(a.framework, a.sample)
    res = {"framework": a.framework, "supported_apis": total, "sampled": len(apis), "budget": a.budget,
           "seed": a.seed, "jobs": a.jobs, "arms": {}, "per_api": {}}
    t0 = time.time()
    chunks = [apis[i:i + a.chunk] for i in range(0, len(apis), a.chunk)]
    summaries: dict[str, dict] = {arm: {"apis": {}} for arm, _ in ARMS}
    walls = {arm: 0.0 for arm, _ in ARMS}
    done = 0
    for c, chunk in enumerate(chunks, 1):
        if a.max_wall is not None and time.time() - t0 > a.max_wall:
            print(f"[coverage] --max-wall reached: {done} of {len(chunks)} chunks", flush=True)
            break
        for arm, learn in ARMS:
            out = os.path.join(a.work, f"{a.framework}-{arm}")
            print(f"[coverage {time.strftime('%H:%M:%S')}] chunk {c}/{len(chunks)} ({len(chunk)} APIs): {arm}",
                  flush=True)
            t = time.time()
            cfg = CampaignConfig(apis=chunk, out=out, budget=a.budget, seed=a.seed, framework=a.framework,
                                 jobs=a.jobs, resume=os.path.exists(os.path.join(out, "runs.sqlite")),
                                 learn_rules=learn)
            summary = run_campaign(cfg, show_progress=not a.no_progress)
            walls[arm] += time.time() - t
            summaries[arm]["apis"].update(summary["apis"])
        done += 1
    covered = {x for ch in chunks[:done] for x in ch}
    res["covered"] = len(covered)
    for arm, _ in ARMS:
        summary = {"apis": {k: v for k, v in summaries[arm]["apis"].items() if k in covered}}
        res["arms"][arm] = dict(arm_figures(summary), wall_s=walls[arm])
        for api, v in summary["apis"].items():
            res["per_api"].setdefault(api, {})[arm] = {
                "pass_rate": v.get("pass_rate", 0.0), "executed": v.get("executed", 0),
                "valid_exec_per_s": v.get("valid_exec_per_s", 0.0), "status": v.get("status")}
    base = a.report or os.path.join(HERE, f"learned_coverage_{a.framework}")
    with open(base + ".json", "w") as f:
        json.dump(res, f, indent=1)
    with open(base + ".md", "w") as f:
        f.write(to_markdown(res))
    print(to_markdown(res))
    return 0


def to_markdown(res: dict) -> str:
    r = res["arms"]
    lines = [f"# Coverage with learned rules: {res['framework']}", "",
             (f"Every supported API ({res['supported_apis']}, in name order), " if res["sampled"] >= res["supported_apis"]
              else f"{res['sampled']} of {res['supported_apis']} supported APIs (deterministic sample by name hash), ") +
             f"{res['budget']} runs per API, seed {res['seed']}, registry constraints, no classifier. "
             f"Command: `python benchmarks/learned_coverage.py --framework {res['framework']} "
             + ("" if res["sampled"] >= res["supported_apis"] else f"--sample {res['sampled']} ") +
             f"--budget {res['budget']} --jobs {res.get('jobs', 1)}` "
             f"(the two arms take turns by chunks of APIs, so both meet the same load)."
             + (f" **Partial**: the first {res['covered']} of the {res['sampled']} APIs (rerun to resume)."
                if res.get("covered", res["sampled"]) < res["sampled"] else ""), "",
             "| arm | APIs with a valid run | pass rate >= 50% | pooled pass | mean pass | exec/s | valid exec/s "
             "| crash sigs | learned rules |",
             "|---|---|---|---|---|---|---|---|---|"]
    for arm, v in r.items():
        lines.append(f"| {arm} | {v['share_with_valid']:.1%} | {v['share_pass_ge_50']:.1%} | "
                     f"{v['pooled_pass_rate']:.1%} | {v['mean_pass_rate']:.1%} | {v['exec_per_s']:.1f} | "
                     f"{v['valid_exec_per_s']:.1f} | {v['crash_signatures']} | {v['learned_rules']} |")
    if "registry" in r and "learned" in r and r["registry"]["pooled_pass_rate"]:
        b, l = r["registry"], r["learned"]
        lines += ["", f"Pooled pass rate x{l['pooled_pass_rate'] / b['pooled_pass_rate']:.2f}, valid exec/s "
                      f"x{(l['valid_exec_per_s'] / b['valid_exec_per_s']) if b['valid_exec_per_s'] else float('nan'):.2f}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
