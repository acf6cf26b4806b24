"""What ``--learn-rules`` costs per run on fast APIs, and what it buys.

For each API, an unfiltered campaign with and without ``--learn-rules``
(same seed and budget, the worker started before the clock, one API at a
time, repeated ``--reps`` times, the arms alternating) reports executions
per second, pass rate and valid executions per second of both, and their
ratio. With several ``--root`` checkouts the runs of every checkout
alternate too, so an old and a new version are compared in one run on the
same load (each checkout runs in its own process with that checkout first
on ``PYTHONPATH``).

    python benchmarks/learn_overhead.py [--apis A,B] [--budget 300] [--reps 2]
        [--root OLD --root NEW] [--report benchmarks/learn_overhead]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
#: the bench's APIs where learned+filter stayed below 0.8x the baseline's
#: valid executions per second (2026-12-08): fast ones, where a run takes
#: about a millisecond
FAST_APIS = ["torch.ops.aten.gather", "torch.ops.aten.kthvalue", "torch.ops.aten.group_norm",
             "torch.ops.aten.scatter.src", "torch.ops.aten.binary_cross_entropy",
             "tf.raw_ops.BiasAdd", "tf.raw_ops.BiasAddGrad"]

# one campaign, in a process whose PYTHONPATH starts with the checkout under test
_ONE = r'''
import json, sys, tempfile
from acetest_ml.campaign import CampaignConfig, run_campaign
from acetest_ml.bench.protocol import load_bench_config

def main():
    config, api, learn, budget, seed = sys.argv[1], sys.argv[2], sys.argv[3] == "1", int(sys.argv[4]), int(sys.argv[5])
    bc = load_bench_config(config)
    c = CampaignConfig(apis=[api], out=tempfile.mkdtemp(prefix="learn-overhead-"), budget=budget, seed=seed,
                       constraints="registry", acetest_data=sys.argv[6], rules=bc.rules, timeout=bc.timeout,
                       jobs=1, cheap=bc.cheap,
                       constraints_by_api={a: v for a, v in bc.constraints_by_api().items() if a == api},
                       learn_rules=learn, time_budget=24 * 3600)  # a time budget starts the clock once the worker is up
    v = run_campaign(c, show_progress=False)["apis"].get(api) or {}
    print(json.dumps({"executed": v.get("executed", 0), "passed": v.get("passed", 0),
                      "elapsed_s": v.get("elapsed_s", 0.0), "status": v.get("status")}))

if __name__ == "__main__":
    main()
'''


def _fail(msg: str) -> None:
    print(f"learn_overhead.py: {msg}", file=sys.stderr)
    raise SystemExit(2)


def _commit(root: str) -> str:
    p = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return p.stdout.strip() or os.path.basename(root)


def _one(root: str, script: str, args: argparse.Namespace, api: str, learn: bool) -> dict:
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.run([sys.executable, script, args.config, api, "1" if learn else "0", str(args.budget),
                        str(args.seed), args.acetest_data], env=env, capture_output=True, text=True)
    lines = p.stdout.strip().splitlines()
    if p.returncode != 0 or not lines:
        tail = (p.stderr.strip().splitlines() or ["no output"])[-1]
        _fail(f"{api} ({'learned' if learn else 'baseline'}, {root}): {tail}")
    return json.loads(lines[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--apis", default=",".join(FAST_APIS))
    ap.add_argument("--budget", type=int, default=300)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--seed", type=int, default=2)
    ap.add_argument("--root", action="append", help="a checkout to measure (repeatable; default: this one)")
    ap.add_argument("--config", default=os.path.join(ROOT, "benchmarks", "apis.yaml"))
    ap.add_argument("--acetest-data", default=os.path.join(ROOT, "..", "shared", "acetest-data"))
    ap.add_argument("--report", default=os.path.join(HERE, "learn_overhead"))
    args = ap.parse_args(argv)
    if args.budget < 1 or args.reps < 1:
        _fail("--budget and --reps must be positive")
    roots = [os.path.abspath(r) for r in (args.root or [ROOT])]
    for r in roots:
        if not os.path.isfile(os.path.join(r, "acetest_ml", "__init__.py")):
            _fail(f"{r}: not an acetest-ml checkout")
    if not os.path.isfile(args.config):
        _fail(f"{args.config}: no such bench config")
    apis = [a for a in args.apis.split(",") if a]
    names = {r: _commit(r) for r in roots}
    script = os.path.join(os.path.dirname(os.path.abspath(args.report)) or ".", ".learn_overhead_one.py")
    os.makedirs(os.path.dirname(script), exist_ok=True)
    with open(script, "w") as f:
        f.write(_ONE)
    t0 = time.time()
    rows = []
    try:
        for api in apis:
            acc: dict = {}
            for _ in range(args.reps):
                for root in roots:
                    for learn in (False, True):
                        r = _one(root, script, args, api, learn)
                        a = acc.setdefault((root, learn), [0, 0, 0.0])
                        a[0] += r["executed"]
                        a[1] += r["passed"]
                        a[2] += r["elapsed_s"]
            row: dict = {"api": api, "by_root": {}}
            for root in roots:
                b, lr = acc[(root, False)], acc[(root, True)]
                d = {"baseline_exec_per_s": b[0] / b[2] if b[2] else 0.0,
                     "learned_exec_per_s": lr[0] / lr[2] if lr[2] else 0.0,
                     "baseline_pass_rate": b[1] / b[0] if b[0] else 0.0,
                     "learned_pass_rate": lr[1] / lr[0] if lr[0] else 0.0,
                     "baseline_valid_per_s": b[1] / b[2] if b[2] else 0.0,
                     "learned_valid_per_s": lr[1] / lr[2] if lr[2] else 0.0}
                d["exec_ratio"] = d["learned_exec_per_s"] / d["baseline_exec_per_s"] if d["baseline_exec_per_s"] else None
                d["valid_ratio"] = d["learned_valid_per_s"] / d["baseline_valid_per_s"] if d["baseline_valid_per_s"] else None
                row["by_root"][root] = d
            rows.append(row)
            print(api, " | ".join(f"{names[r]}: exec/s {d['baseline_exec_per_s']:.0f} -> {d['learned_exec_per_s']:.0f} "
                                  f"(x{d['exec_ratio'] or 0:.2f}), pass {d['baseline_pass_rate']:.0%} -> {d['learned_pass_rate']:.0%}, "
                                  f"valid/s x{d['valid_ratio'] or 0:.2f}"
                                  for r, d in row["by_root"].items()), flush=True)
    finally:
        os.unlink(script)
    out = {"apis": apis, "budget": args.budget, "reps": args.reps, "seed": args.seed, "roots": roots,
           "commits": [names[r] for r in roots],
           "wall_s": time.time() - t0, "rows": rows}
    with open(args.report + ".json", "w") as f:
        json.dump(out, f, indent=1)
    lines = ["# Per-run cost of --learn-rules on fast APIs", "",
             f"`python benchmarks/learn_overhead.py --budget {args.budget} --reps {args.reps}"
             + "".join(f" --root {r}" for r in (args.root or [])) + "`; "
             "unfiltered campaigns, one API at a time, the worker up before the clock, arms and checkouts alternating. "
             "exec/s and valid exec/s are pooled over the repetitions.", "",
             "| API | checkout | exec/s baseline -> learned | ratio | pass baseline -> learned | valid exec/s baseline -> learned | ratio |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        for root, d in row["by_root"].items():
            lines.append(f"| {row['api']} | {names[root]} | {d['baseline_exec_per_s']:.0f} -> {d['learned_exec_per_s']:.0f} | "
                         f"{d['exec_ratio'] or 0:.2f}x | {d['baseline_pass_rate']:.1%} -> {d['learned_pass_rate']:.1%} | "
                         f"{d['baseline_valid_per_s']:.0f} -> {d['learned_valid_per_s']:.0f} | {d['valid_ratio'] or 0:.2f}x |")
    with open(args.report + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"report: {args.report}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
