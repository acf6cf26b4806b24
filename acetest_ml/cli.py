"""Command line: ``acetest-ml specs | campaign | train | eval | acetest``.

Every user error (unknown API, broken YAML, corrupt model, missing data)
ends as one line on stderr and exit code 2.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from .errors import UserError

EXIT_USER_ERROR = 2


def _add_campaign_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--framework", choices=["tf", "torch"], help="framework (inferred from API names)")
    p.add_argument("--api", action="append", default=[], help="API name (repeatable)")
    p.add_argument("--api-file", help="file with one API name per line (# comments allowed)")
    p.add_argument("--all", action="store_true", help="every supported API of --framework "
                   "(or every API in the ACETest data with --constraints acetest)")
    p.add_argument("--budget", type=int, default=200, help="executed inputs per API (default 200)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="campaign folder (results store, summary, crashes)")
    p.add_argument("--resume", action="store_true", help="continue the campaign recorded in --out")
    p.add_argument("--constraints", choices=["registry", "acetest"], default="registry",
                   help="constraint source: our registry-derived rules or ACETest's extracted data")
    p.add_argument("--acetest-data", default=os.path.join("third_party", "ACETest", "Tester", "data"),
                   help="ACETest data directory (holds tensorflow/API2OP.csv)")
    p.add_argument("--rules", default=None,
                   help="YAML file of extra per-API rules (registry constraints)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per run before it is a timeout")
    p.add_argument("--jobs", type=int, default=2, help="APIs run in parallel (one worker each)")
    p.add_argument("--ray", metavar="ADDRESS", default=None,
                   help="run each API as a Ray task: 'local' (a Ray instance on this machine with "
                   "--jobs CPUs), 'auto' or 'ray://host:port' / 'host:port' (a running cluster); "
                   "needs the ray extra: pip install -e '.[ray]'")
    p.add_argument("--mem-limit-mb", type=int, default=None, help="worker memory limit")
    p.add_argument("--ml-filter", nargs="?", const="offline", choices=["offline", "online"],
                   default=None, help="discard predicted-invalid inputs (models from --models; "
                   "'online' learns during the campaign)")
    p.add_argument("--models", default=os.path.join("configs", "models.yaml"),
                   help="model registry YAML (default configs/models.yaml)")
    p.add_argument("--exploration", type=float, default=0.05,
                   help="share of the executed budget spent on predicted-invalid inputs, run anyway to measure the filter's misses (default 0.05; 0 = none)")
    p.add_argument("--batch", type=int, default=16, help="candidates scored per batch")
    p.add_argument("--warmup", type=int, default=60,
                   help="online filter: labelled runs before the first model (default 60)")
    p.add_argument("--retrain-every", type=int, default=50,
                   help="online filter: new labels between retrainings (default 50)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _read_api_file(path: str) -> list[str]:
    if not os.path.exists(path):
        raise UserError(f"API file not found: {path}")
    out = []
    with open(path) as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line:
                out.append(line)
    return out


def _campaign_apis(args) -> list[str]:
    apis = list(args.api)
    if args.api_file:
        apis += _read_api_file(args.api_file)
    if args.all:
        if args.constraints == "acetest":
            from .campaign import _acetest_data
            apis += _acetest_data(args.acetest_data).apis()
        else:
            if not args.framework:
                raise UserError("--all needs --framework tf or torch")
            from .spec import load_specs
            apis += sorted(n for n, s in load_specs(args.framework).items() if s.supported)
    seen, out = set(), []
    for a in apis:
        if a not in seen:
            seen.add(a)
            out.append(a)
    if not out:
        raise UserError("no API given: use --api NAME, --api-file FILE or --all")
    return out


def cmd_campaign(args) -> int:
    from .campaign import CampaignConfig, run_campaign
    from .summary import format_table
    if args.budget < 1:
        raise UserError("--budget must be at least 1")
    if args.ray is not None:
        from .distributed import import_ray
        import_ray()  # not installed: one line, exit 2
    if not 0.0 <= args.exploration <= 1.0:
        raise UserError("--exploration must be between 0 and 1")
    if args.constraints == "acetest":
        from .campaign import _acetest_data
        _acetest_data(args.acetest_data)  # a missing/malformed data dir stops here
    apis = _campaign_apis(args)
    if args.constraints == "registry":
        from .spec import get_spec
        from .solve.rules import load_rules_file
        for a in apis:
            get_spec(a, args.framework)  # unknown API: one-line error, exit 2
        if args.rules:
            load_rules_file(args.rules)
    if args.ml_filter:
        from .filter import check_models_config
        check_models_config(args.models)
    cfg = CampaignConfig(apis=apis, out=args.out, budget=args.budget, seed=args.seed,
                         framework=args.framework, constraints=args.constraints,
                         acetest_data=args.acetest_data, rules=args.rules, timeout=args.timeout,
                         jobs=max(1, args.jobs), resume=args.resume, ml_filter=args.ml_filter,
                         models=args.models, exploration=args.exploration, batch=max(1, args.batch),
                         warmup=max(1, args.warmup), retrain_every=max(1, args.retrain_every),
                         mem_limit_mb=args.mem_limit_mb)
    summary = run_campaign(cfg, show_progress=not args.no_progress, ray_address=args.ray)
    print(format_table(summary))
    print(f"summary: {os.path.join(args.out, 'summary.json')}")
    return 0


def cmd_report(args) -> int:
    from .campaign_report import write
    md, png = write(args.dir)
    print(f"report: {md}\nplot: {png}")
    return 0


def cmd_specs(args) -> int:
    if args.api:
        from .spec import get_spec
        spec = get_spec(args.api, args.framework)
        print(json.dumps(spec.to_dict(), indent=1))
        return 0
    if not args.framework:
        raise UserError("specs needs --framework tf or torch (or --api NAME)")
    from .spec import load_specs
    specs = load_specs(args.framework)
    if args.framework == "tf":
        from .spec.tensorflow import spec_counts
    else:
        from .spec.torch import spec_counts
    counts = spec_counts(specs)
    if args.json:
        print(json.dumps(counts, indent=1))
        return 0
    print(f"{args.framework}: {counts['supported']} supported / {counts['total']} total")
    reasons = counts.get("top_reasons") or counts.get("reasons") or []
    if isinstance(reasons, dict):
        reasons = list(reasons.items())
    for reason, n in list(reasons)[:10]:
        print(f"  unsupported: {reason}: {n}")
    return 0


def cmd_train(args) -> int:
    from .train import train_command
    return train_command(args)


def cmd_eval(args) -> int:
    from .train import eval_command
    return eval_command(args)


def cmd_acetest(args) -> int:
    from .upstream.runner import run_from_namespace
    return run_from_namespace(args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="acetest-ml", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("specs", help="show an API spec, or spec counts of a framework")
    s.add_argument("--framework", choices=["tf", "torch"])
    s.add_argument("--api")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_specs)

    c = sub.add_parser("campaign", help="generate and execute inputs, record every run")
    _add_campaign_args(c)
    c.set_defaults(fn=cmd_campaign)

    r = sub.add_parser("report", help="Markdown report and throughput plot of a campaign folder")
    r.add_argument("dir", help="campaign folder (holds runs.sqlite)")
    r.set_defaults(fn=cmd_report)

    t = sub.add_parser("train", help="train validity models from a campaign's runs")
    t.add_argument("--runs", required=True, help="campaign folder")
    t.add_argument("--api", action="append", default=[])
    t.add_argument("--models", default=os.path.join("configs", "models.yaml"))
    t.add_argument("--out", default=None, help="folder for model files (default: models_dir of --models)")
    t.add_argument("--kind", default=None, help="classifier kind (default from --models)")
    t.set_defaults(fn=cmd_train)

    e = sub.add_parser("eval", help="score validity models on held-out runs")
    e.add_argument("--runs", required=True, help="campaign folder with other-seed runs")
    e.add_argument("--model", action="append", default=[], help="model sidecar .json (repeatable)")
    e.add_argument("--models", default=os.path.join("configs", "models.yaml"))
    e.add_argument("--api", action="append", default=[])
    e.add_argument("--json", action="store_true")
    e.set_defaults(fn=cmd_eval)

    a = sub.add_parser("acetest", help="run the original ACETest Tester with our filter hooked in")
    from .upstream.runner import add_arguments as add_upstream_arguments
    add_upstream_arguments(a)
    a.set_defaults(fn=cmd_acetest)
    return p


def main(argv: list[str] | None = None) -> int:
    # TensorFlow's start-up INFO/WARNING lines drown the progress bar; errors stay
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.fn(args) or 0)
    except UserError as e:
        msg = " ".join(str(e).split("\n"))
        print(f"acetest-ml: error: {msg}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("acetest-ml: interrupted (recorded runs are kept; rerun with --resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
