"""Crash restart benchmark (issue 11, item 1): a crash-heavy API run with the
warm spare worker on and off, in one run; writes
benchmarks/crash_restart.{json,md}.

    python benchmarks/crash_restart.py [--api tf.raw_ops.Conv2DBackpropInput]
                                       [--budget 300] [--seed 3] [--out runs/crash-restart]

Both arms run the same unfiltered campaign (registry constraints, same seed,
so the same inputs and crashes). The framework's first start is paid before
each arm's campaign clock starts (as in a campaign over many APIs, where the
worker outlives one API), so exec/s measures the steady state, which is what a
crash restart costs; the first start is reported separately. Target: >= 20
exec/s with the spare.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time

from acetest_ml.campaign import CampaignConfig, run_campaign
from acetest_ml.execute.supervisor import Executor
from acetest_ml.spec import get_spec

TARGET_EXEC_PER_S = 20.0


class _Prestarted:
    """Executor factory whose workers are started before the campaign."""

    def __init__(self, framework: str, cfg: CampaignConfig):
        self.ex = Executor(framework, timeout=cfg.timeout, log_dir=os.path.join(cfg.out, "logs"),
                           warm_spare=cfg.warm_spare)
        t = time.monotonic()
        self.ex.start()
        self.first_start_s = time.monotonic() - t

    def __call__(self, framework: str) -> Executor:
        return self.ex


def run_arm(api: str, budget: int, seed: int, out: str, warm_spare: bool) -> dict:
    if os.path.exists(out):
        shutil.rmtree(out)
    cfg = CampaignConfig(apis=[api], out=out, budget=budget, seed=seed, jobs=1,
                         warm_spare=warm_spare)
    os.makedirs(out, exist_ok=True)
    factory = _Prestarted(get_spec(api).framework, cfg)
    try:
        t = time.monotonic()
        summary = run_campaign(cfg, show_progress=True, executor_factory=factory)
        wall = time.monotonic() - t
        starts, cold = factory.ex.starts, factory.ex.cold_starts
        restart_wait = factory.ex.restart_wait
    finally:
        factory.ex.close()
    s = summary["apis"][api]
    return {"warm_spare": warm_spare, "executed": s["executed"], "passed": s["passed"],
            "invalid": s["invalid"], "crash": s["crash"], "timeout": s["timeout"],
            "elapsed_s": s["elapsed_s"], "exec_per_s": s["exec_per_s"],
            "valid_exec_per_s": s["valid_exec_per_s"], "pass_rate": s["pass_rate"],
            "crash_signatures": s["crash_signatures"], "workers_started": starts,
            "framework_starts": cold, "first_start_s": factory.first_start_s,
            "restart_wait_s": restart_wait,
            "wall_s": wall}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--api", default="tf.raw_ops.Conv2DBackpropInput")
    ap.add_argument("--budget", type=int, default=300)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--out", default=os.path.join("runs", "crash-restart"))
    ap.add_argument("--write", default=os.path.dirname(os.path.abspath(__file__)),
                    help="folder for crash_restart.md/.json")
    args = ap.parse_args()
    arms = {}
    load_before = os.getloadavg()
    for name, spare in (("spare", True), ("cold", False)):
        print(f"== {args.api}: warm spare {'on' if spare else 'off'}", flush=True)
        arms[name] = run_arm(args.api, args.budget, args.seed, os.path.join(args.out, name), spare)
    on, off = arms["spare"], arms["cold"]
    speedup = on["exec_per_s"] / off["exec_per_s"] if off["exec_per_s"] else float("inf")
    result = {"api": args.api, "budget": args.budget, "seed": args.seed,
              "constraints": "registry", "target_exec_per_s": TARGET_EXEC_PER_S,
              "target_met": on["exec_per_s"] >= TARGET_EXEC_PER_S, "speedup": speedup,
              "same_signatures": on["crash_signatures"] == off["crash_signatures"],
              "cpus": os.cpu_count(), "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
              "arms": arms}
    os.makedirs(args.write, exist_ok=True)
    with open(os.path.join(args.write, "crash_restart.json"), "w") as f:
        json.dump(result, f, indent=1)
    rows = ["| warm spare | executed | pass | crash | timeout | elapsed s | exec/s | valid exec/s "
            "| workers started | framework starts | waited for a worker after crashes, s | first start s "
            "| signatures |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for a in (on, off):
        rows.append(f"| {'on' if a['warm_spare'] else 'off'} | {a['executed']} | {a['passed']} "
                    f"| {a['crash']} | {a['timeout']} | {a['elapsed_s']:.1f} | {a['exec_per_s']:.2f} "
                    f"| {a['valid_exec_per_s']:.2f} | {a['workers_started']} | {a['framework_starts']} "
                    f"| {a['restart_wait_s']:.1f} "
                    f"| {a['first_start_s']:.1f} | {len(a['crash_signatures'])} |")
    text = (f"# Crash restart: warm spare on vs off\n\n"
            f"`python benchmarks/crash_restart.py --api {args.api} --budget {args.budget} "
            f"--seed {args.seed}` (registry constraints, no filter, 1 framework thread per worker).\n\n"
            + "\n".join(rows) + "\n\n"
            f"Speed-up (exec/s, spare on / off): {speedup:.1f}x. Target >= {TARGET_EXEC_PER_S:g} "
            f"exec/s with the spare: {'met' if result['target_met'] else 'NOT met'}. "
            f"Same crash signatures in both arms: {result['same_signatures']}.\n\n"
            "exec/s = executed / the API's campaign time; the framework's first start "
            "(\"first start s\") is paid before that clock starts, in both arms. "
            f"Machine: {os.cpu_count()} cores, 1-minute load average "
            f"{load_before[0]:.1f} before / {result['loadavg_after'][0]:.1f} after "
            "(shared with other jobs).\n")
    with open(os.path.join(args.write, "crash_restart.md"), "w") as f:
        f.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
