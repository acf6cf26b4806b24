"""Command line: ``acetest-ml specs | campaign | train | eval | crashes | replay |
minimize | acetest``.

Every user error (unknown API, broken YAML, corrupt model, missing data)
ends as one line on stderr and exit code 2.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from .errors import UserError
from .settings import (CONSTRAINT_SOURCES, DEFAULT_MODELS_DIR, DEFAULTS as D, FILTER_POLICIES,
                       FRAMEWORKS, ML_FILTERS, SettingError)

EXIT_USER_ERROR = 2
#: settings whose command-line option is not ``--<name with dashes>``
_OPTION_OF_SETTING = {"apis": "--api", "max_candidates_per_exec": "max_candidates_per_exec"}


def _models_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", default=D["models"],
                   help="model registry YAML (default: the registry shipped with the package)")
    p.add_argument("--models-dir", default=None,
                   help="folder of model files, created on demand (default: the registry's "
                   f"models_dir; ./{DEFAULT_MODELS_DIR} for the packaged registry)")


def _add_campaign_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--framework", choices=list(FRAMEWORKS), help="framework (inferred from API names)")
    p.add_argument("--api", action="append", default=[], help="API name (repeatable)")
    p.add_argument("--api-file", help="file with one API name per line (# comments allowed)")
    p.add_argument("--all", action="store_true", help="every supported API of --framework "
                   "(or every API in the ACETest data with --constraints acetest)")
    p.add_argument("--budget", type=int, default=D["budget"],
                   help="executed inputs per API (default %(default)s)")
    p.add_argument("--seed", type=int, default=D["seed"])
    p.add_argument("--out", required=True, help="campaign folder (results store, summary, crashes)")
    p.add_argument("--resume", action="store_true", help="continue the campaign recorded in --out")
    p.add_argument("--constraints", choices=list(CONSTRAINT_SOURCES), default=D["constraints"],
                   help="constraint source: our registry-derived rules or ACETest's extracted data")
    p.add_argument("--acetest-data", default=D["acetest_data"],
                   help="ACETest data directory (holds tensorflow/API2OP.csv)")
    p.add_argument("--acetest-extensions", action="store_true",
                   help="ACETest constraints: our generation improvements beyond upstream's Tester "
                   "(default: faithful to upstream)")
    p.add_argument("--rules", default=D["rules"],
                   help="YAML file of extra per-API rules (registry constraints)")
    p.add_argument("--timeout", type=float, default=D["timeout"],
                   help="seconds per run before it is a timeout (default %(default)s)")
    p.add_argument("--jobs", type=int, default=D["jobs"],
                   help="APIs run in parallel, one worker each (default %(default)s)")
    p.add_argument("--ray", metavar="ADDRESS", default=None,
                   help="run each API as a Ray task: 'local' (a Ray instance on this machine with "
                   "--jobs CPUs), 'auto' or 'ray://host:port' / 'host:port' (a running cluster); "
                   "needs the ray extra: pip install -e '.[ray]'")
    p.add_argument("--mem-limit-mb", type=int, default=D["mem_limit_mb"], help="worker memory limit")
    p.add_argument("--ml-filter", nargs="?", const="offline", choices=list(ML_FILTERS),
                   default=D["ml_filter"], help="discard predicted-invalid inputs (models from "
                   "--models; 'online' learns during the campaign)")
    _models_args(p)
    p.add_argument("--exploration", type=float, default=D["exploration"],
                   help="share of the executed budget spent on predicted-invalid inputs, run "
                   "anyway to measure the filter's misses (default %(default)s; 0 = none)")
    p.add_argument("--filter-policy", choices=list(FILTER_POLICIES), default=D["filter_policy"],
                   help="score: discard every input scoring below the threshold; rate: discard one "
                   "only when running it would lower the API's valid executions per second, from "
                   "its score, the measured time of invalid runs and the valid rate so far "
                   "(decisions then depend on timing) (default %(default)s)")
    p.add_argument("--batch", type=int, default=D["batch"],
                   help="candidates scored per batch (default %(default)s)")
    p.add_argument("--warmup", type=int, default=D["warmup"],
                   help="online filter: labelled runs before the first model (default %(default)s)")
    p.add_argument("--retrain-every", type=int, default=D["retrain_every"],
                   help="online filter: new labels between retrainings (default %(default)s)")
    p.add_argument("--learn-rules", action="store_true",
                   help="learn rules from the runs (error messages, mined predicates) and re-solve "
                   "with them; writes <out>/learned_rules.yaml")
    p.add_argument("--prior-rules", default=None, metavar="FILE",
                   help="with --learn-rules: start from these rules (e.g. `rules learn` output), "
                   "kept while no passing run breaks them; either constraint source")
    p.add_argument("--crash-threshold", type=float, default=D["crash_threshold"],
                   help="filter: never discard an input whose predicted crash/timeout probability "
                   "reaches this (default %(default)s)")
    p.add_argument("--known-crash-k", type=int, default=D["known_crash_k"],
                   help="filter: after a crash signature was seen K times, inputs predicted to "
                   "reproduce it run only from the exploration share (default %(default)s; 0 = off)")
    p.add_argument("--known-crash-floor", type=int, default=D["known_crash_floor"], metavar="N",
                   help="crash classes with fewer training runs are cut at 3x their share; after N "
                        "candidates in a row not run, the next known crash runs (0: off; default "
                        "%(default)s)")
    p.add_argument("--explore-band", type=float, default=D["explore_band"],
                   help="filter: explore predicted-invalid inputs scoring within this distance "
                   "below the threshold (default %(default)s; 1 = any)")
    p.add_argument("--time-budget", type=float, default=D["time_budget"], metavar="SECONDS",
                   help="stop each API after this many seconds of wall time, counted once its "
                   "worker is up (the budget still applies)")
    p.add_argument("--no-cheap", action="store_true",
                   help="solve every registry candidate with Z3 (the old, slower scheme) instead of "
                   "deriving most of them from checked mutations of pooled Z3 models")
    p.add_argument("--no-lift-check", action="store_true",
                   help="filter: always discard predicted-invalid inputs, even where the runs "
                   "show they pass about as often as the accepted ones")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    # measuring switch: cold worker restarts instead of the warm spare
    p.add_argument("--no-warm-spare", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--spares", type=int, default=D["spares"], metavar="N",
                   help="warm spare workers per framework (default %(default)s)")
    p.add_argument("--prefetch", type=int, default=D["prefetch"], metavar="N",
                   help="candidates drawn ahead while runs execute (0: off; default %(default)s)")


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


def _campaign_config(args, apis: list[str]):
    from .settings import CampaignConfig
    return CampaignConfig(apis=apis, out=args.out, budget=args.budget, seed=args.seed,
                          framework=args.framework, constraints=args.constraints,
                          acetest_data=args.acetest_data,
                          acetest_extensions=args.acetest_extensions,
                          rules=args.rules, timeout=args.timeout,
                          jobs=args.jobs, resume=args.resume, ml_filter=args.ml_filter,
                          models=args.models, models_dir=args.models_dir,
                          exploration=args.exploration, filter_policy=args.filter_policy,
                          batch=args.batch, warmup=args.warmup,
                          retrain_every=args.retrain_every, mem_limit_mb=args.mem_limit_mb,
                          learn_rules=args.learn_rules, prior_rules=getattr(args, "prior_rules", None),
                          cheap=not getattr(args, "no_cheap", False),
                          lift_check=not getattr(args, "no_lift_check", False),
                          crash_threshold=args.crash_threshold, known_crash_k=args.known_crash_k,
                          known_crash_floor=getattr(args, "known_crash_floor", 16),
                          explore_band=args.explore_band, time_budget=args.time_budget,
                          warm_spare=not getattr(args, "no_warm_spare", False),
                          spares=getattr(args, "spares", 2), prefetch=getattr(args, "prefetch", 16))


def cmd_campaign(args) -> int:
    from .campaign import run_campaign
    from .summary import format_table
    if args.ray is not None:
        from .distributed import import_ray, loopback_only
        if args.ray == "local":
            loopback_only()
        import_ray()  # not installed: one line, exit 2
    apis = _campaign_apis(args)
    # the settings first: a nonsensical number or a bad --out stops before any loading
    cfg = _campaign_config(args, apis)
    if args.constraints == "acetest":
        from .campaign import _acetest_data
        _acetest_data(args.acetest_data)  # a missing/malformed data dir stops here
    else:
        from .spec import get_spec
        from .solve.rules import load_rules_file
        for a in apis:
            get_spec(a, args.framework)  # unknown API: one-line error, exit 2
        if args.rules:
            load_rules_file(args.rules)
    if getattr(args, "prior_rules", None):
        if not args.learn_rules:
            raise UserError("--prior-rules needs --learn-rules")
        from .solve.rules import load_rules_file
        load_rules_file(args.prior_rules)
    if args.ml_filter:
        from .filter import check_models_config
        check_models_config(args.models, args.models_dir,
                            apis if args.ml_filter == "offline" else ())
    summary = run_campaign(cfg, show_progress=not args.no_progress, ray_address=args.ray)
    print(format_table(summary))
    print(f"summary: {os.path.join(args.out, 'summary.json')}")
    n_internal = summary["overall"].get("internal_errors", 0)
    if n_internal:
        print(f"acetest-ml: warning: {n_internal} inputs hit internal errors of acetest-ml (bugs "
              "of ours, not findings; examples in summary.json)", file=sys.stderr)
    if args.learn_rules:
        print(f"learned rules: {os.path.join(args.out, 'learned_rules.yaml')}")
    return 0


def cmd_rules_learn(args) -> int:
    from .learn import learn_store, write_rules_yaml
    if os.path.isdir(args.output):
        raise UserError(f"-o {args.output} is a folder; give a file name")
    learners = learn_store(args.runs, args.api or None)
    learned = {api: lr.info()["rules"] for api, lr in learners.items()}
    write_rules_yaml(args.output, learned, header=f"learned offline from {args.runs}")
    n = sum(1 for rules in learned.values() for r in rules if r["status"] == "kept")
    print(f"{n} rules for {sum(1 for lr in learners.values() if lr.active())} APIs -> {args.output}")
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


def cmd_crashes(args) -> int:
    from .triage import format_bugs, list_bugs
    bugs = list_bugs(args.dir)
    if args.json:
        print(json.dumps(bugs, indent=1))
    else:
        print(format_bugs(bugs))
    return 0


def cmd_replay(args) -> int:
    from .outcome import Outcome
    from .triage import replay_bug, signature_of
    same, res = replay_bug(args.folder, minimized=args.minimized)
    got = signature_of(res) if Outcome(res.outcome).failure else (res.message or "")[:200]
    print(f"{'reproduced' if same else 'not reproduced'}: {res.outcome}"
          + (f": {got}" if got else ""))
    return 0 if same else 1


def cmd_minimize(args) -> int:
    from .triage import minimize_bug
    if args.max_runs < 1:
        raise UserError("--max-runs must be at least 1")
    rec = minimize_bug(args.folder, max_runs=args.max_runs)
    print(f"minimised in {rec['runs']} runs: tensor elements {rec['elements_before']} -> "
          f"{rec['elements_after']}; wrote {os.path.join(args.folder, rec['input'])} and "
          f"{os.path.join(args.folder, rec['reproducer'])}")
    return 0


def cmd_acetest(args) -> int:
    from .upstream.runner import run_from_namespace
    return run_from_namespace(args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="acetest-ml", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("specs", help="show an API spec, or spec counts of a framework")
    s.add_argument("--framework", choices=list(FRAMEWORKS))
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
    _models_args(t)
    t.add_argument("--out", dest="models_dir", default=None, help=argparse.SUPPRESS)  # old name
    t.add_argument("--kind", default=None, help="classifier kind (default from --models)")
    t.set_defaults(fn=cmd_train)

    e = sub.add_parser("eval", help="score validity models on held-out runs")
    e.add_argument("--runs", required=True, help="campaign folder with other-seed runs")
    e.add_argument("--model", action="append", default=[], help="model sidecar .json (repeatable)")
    _models_args(e)
    e.add_argument("--api", action="append", default=[])
    e.add_argument("--json", action="store_true")
    e.set_defaults(fn=cmd_eval)

    r = sub.add_parser("rules", help="learned rules")
    rsub = r.add_subparsers(dest="rules_cmd", required=True)
    rl = rsub.add_parser("learn", help="learn rules offline from a campaign's runs")
    rl.add_argument("--runs", required=True, help="campaign folder")
    rl.add_argument("-o", "--output", required=True, help="rules YAML to write (usable with --rules)")
    rl.add_argument("--api", action="append", default=[])
    rl.set_defaults(fn=cmd_rules_learn)
    cr = sub.add_parser("crashes", help="unique crash signatures of a campaign (its bug folders)")
    cr.add_argument("dir", help="campaign folder (holds bugs/)")
    cr.add_argument("--json", action="store_true",
                    help="a JSON list of {signature, api, count, folder, ...}")
    cr.set_defaults(fn=cmd_crashes)

    rp = sub.add_parser("replay", help="re-run a bug folder's input in a fresh worker "
                        "(exit 0: same signature, 1: not reproduced)")
    rp.add_argument("folder", help="a bug folder (<campaign>/bugs/<id>)")
    rp.add_argument("--minimized", action="store_true", help="replay the minimised input")
    rp.set_defaults(fn=cmd_replay)

    mn = sub.add_parser("minimize", help="shrink a bug folder's input while its signature holds")
    mn.add_argument("folder", help="a bug folder (<campaign>/bugs/<id>)")
    mn.add_argument("--max-runs", type=int, default=150, help="runs at most (default 150)")
    mn.set_defaults(fn=cmd_minimize)

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
        msg = str(e)
        if isinstance(e, SettingError):  # name the option the user typed
            option = _OPTION_OF_SETTING.get(e.setting, "--" + e.setting.replace("_", "-"))
            msg = f"{option}: {e.problem}"
        msg = " ".join(msg.split("\n"))
        print(f"acetest-ml: error: {msg}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("acetest-ml: interrupted (recorded runs are kept; rerun with --resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
