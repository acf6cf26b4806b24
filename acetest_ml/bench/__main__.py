"""``python -m acetest_ml.bench``: run the benchmark protocol and write the report.

    python -m acetest_ml.bench --config benchmarks/apis.yaml [--quick] [--out DIR | --resume DIR]
    python -m acetest_ml.bench --upstream [--rounds 300] [--api A ...] [--arms ...] [--out DIR] [--publish]
    python -m acetest_ml.bench --upstream --parity [--rounds 60] [--seeds 2 3 4] [--out DIR] [--publish]

``--upstream``: the original ACETest Tester beside the hook and our engine
(:mod:`acetest_ml.bench.upstream`); without a checkout it says so and exits 0.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys

from ..errors import UserError
from ..settings import FILTER_POLICIES


def main(argv=None) -> int:
    # TensorFlow's start-up INFO/WARNING lines drown the progress bar; errors stay
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    ap = argparse.ArgumentParser(prog="python -m acetest_ml.bench")
    ap.add_argument("--config", default="benchmarks/apis.yaml")
    ap.add_argument("--quick", action="store_true", help="the fixed quick subset with small budgets")
    ap.add_argument("--out", default=None, help="output folder (default benchmarks/results/<timestamp>)")
    ap.add_argument("--resume", default=None, help="continue a killed bench in this folder")
    ap.add_argument("--acetest-data", default=os.environ.get("ACETEST_DATA", "../shared/acetest-data"))
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--no-cheap", action="store_true",
                    help="every registry candidate from Z3 (the old scheme), to measure cheap candidates")
    ap.add_argument("--filter-policy", choices=list(FILTER_POLICIES), default=None,
                    help="the filtered arms' filter policy (default: the config's filter_policy, else score)")
    ap.add_argument("--publish", action="store_true",
                    help="copy the report to benchmarks/RESULTS.md (full runs only)")
    ap.add_argument("--upstream", action="store_true",
                    help="upstream scope: ACETest's Tester unfiltered / + hook offline / + hook online, "
                         "our ACETest mode unfiltered / online")
    ap.add_argument("--acetest-home", default=None, help="upstream checkout (default $ACETEST_HOME or the submodule)")
    ap.add_argument("--rounds", type=int, default=300, help="--upstream: rounds per API and arm")
    ap.add_argument("--api", action="append", default=[], help="--upstream: only this API (repeatable)")
    ap.add_argument("--arms", nargs="+", default=None,
                    help="only these arms (--upstream: its arms; else of baseline filtered online learned "
                         "learned_filter: the others are reported from what their folders hold)")
    ap.add_argument("--report-only", action="store_true",
                    help="--upstream: write the report from the arms already finished in --out, run nothing")
    ap.add_argument("--round-timeout", type=int, default=10,
                    help="--upstream: upstream's --round_timeout in seconds (its default 10; raise it on a loaded "
                         "machine, where upstream's worker start-up alone can exceed it)")
    ap.add_argument("--parity", action="store_true",
                    help="with --upstream: upstream's Tester beside our ACETest mode (faithful) and "
                         "--acetest-extensions on every API of the ACETest data (issue 10 point 2)")
    ap.add_argument("--seeds", type=int, nargs="+", default=None, help="--parity: seeds (default 2)")
    args = ap.parse_args(argv)
    if args.parity and not args.upstream:
        print("acetest-ml bench: error: --parity needs --upstream", file=sys.stderr)
        return 2
    if args.upstream:
        from . import parity, upstream
        try:
            return (parity if args.parity else upstream).main(args)
        except UserError as e:
            print(f"acetest-ml bench: error: {e}", file=sys.stderr)
            return 2
    from .protocol import default_out_dir, load_bench_config, run_bench
    try:
        cfg = load_bench_config(args.config, quick=args.quick)
        cfg.cheap = not args.no_cheap
        if args.filter_policy:
            cfg.filter_policy = args.filter_policy
        if args.arms:
            from .protocol import ARMS
            bad = sorted(set(args.arms) - set(ARMS))
            if bad:
                raise UserError(f"--arms: unknown arm {bad[0]!r} (arms: {', '.join(ARMS)})")
            cfg.arms = tuple(args.arms)
        if cfg.acetest_apis:
            from ..campaign import _acetest_data
            _acetest_data(args.acetest_data)
        out = args.resume or args.out or default_out_dir()
        if args.resume and not os.path.isdir(args.resume):
            raise UserError(f"nothing to resume at {args.resume}")
        results = run_bench(cfg, out, args.acetest_data, progress=not args.no_progress)
    except UserError as e:
        print(f"acetest-ml bench: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench interrupted: rerun with --resume <out> to continue", file=sys.stderr)
        return 130
    from .report import overall_table
    print(overall_table(results))
    if args.publish and not cfg.quick:
        here = os.path.dirname(os.path.abspath(args.config))
        shutil.copy(os.path.join(out, "report.md"), os.path.join(here, "RESULTS.md"))
        for png in ("pass_rate_per_api.png", "overall.png"):
            shutil.copy(os.path.join(out, png), os.path.join(here, png))
        from .report import learned_table
        _update_readme(os.path.join(os.path.dirname(here), "README.md"),
                       overall_table(results) + "\n\nLearned rules:\n\n" + learned_table(results), out)
    return 0


def _update_readme(path: str, table: str, out: str) -> None:
    """Put the overall table of a published full run into the README."""
    if not os.path.exists(path):
        return
    text = open(path).read()
    start, end = "<!-- BENCH-TABLE -->", "<!-- /BENCH-TABLE -->"
    if start not in text or end not in text:
        return
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    body = f"{start}\nFrom `{out}` (full details in `benchmarks/RESULTS.md`):\n\n{table}\n{end}"
    with open(path, "w") as f:
        f.write(head + body + tail)


if __name__ == "__main__":
    sys.exit(main())
