"""``acetest-ml acetest``: run the original ACETest Tester, optionally with the
validity filter hooked in, and report upstream's pass rate.

    acetest-ml acetest [--ml-filter[=online]] [--models models.yaml]
                       [--acetest-home DIR] [--compare] [--exploration X] [--seed N]
                       -- <upstream main.py options>

Upstream's options (both the original Tester and the ncsu-swat fork):
``--framework=tf|torch``, ``--target_api=<api>`` (one API; ``--filter=all|exist|
new|after|list`` selects many), ``--test_round=N`` (runs per API),
``--total_round=N`` (repetitions), ``--mode=all|cpu_ori|cpu_onednn|gpu``,
``--work_path=DIR``. Upstream has no seed option: ``--seed`` here seeds its
global random generators and hash seed. Upstream writes
``<work_path>/output_<fw>_<round>/res.csv`` (one row per API and mode) and
``<work_path>/output_<fw>_<round>/<api>/{crash,timeout,invalid,samples,...}``;
without ``--work_path`` the folders go to ``Tester/src``. Its pass rate is
``(runs - invalid) / runs``.
"""
from __future__ import annotations

import argparse
import getopt
import glob
import os
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Optional, TextIO

from ..errors import UserError
from ..settings import DEFAULT_MODELS
from .hook import STATS_FILE, load_registry, read_stats

# Long options of upstream main.py (union of the original and the ncsu-swat fork).
UPSTREAM_OPTIONS = ("framework=", "filter=", "mode=", "test_round=", "round_timeout=", "use_cons=",
                    "api_timeout=", "target_api=", "save_non_crash=", "total_round=", "get_cov=",
                    "work_path=", "save_bitmap=", "record_cov=", "api_workers=")
# Data folders per framework: the original Tester keeps PyTorch data in
# data/pytorch, the ncsu-swat fork in data/torch (its op_json and constraint
# folders are named after the op of API2OP.csv, e.g. torch.add -> binary).
DATA_SUBDIRS = {"tf": ("tensorflow",), "torch": ("pytorch", "torch")}
_PKG_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class UpstreamSetupError(UserError):
    pass


# ------------------------------------------------------------ checkout and options

def locate_home(acetest_home: Optional[str] = None) -> str:
    """The ACETest checkout: ``acetest_home``, else ``$ACETEST_HOME``, else
    ``third_party/ACETest`` (in the working directory, then beside this
    package). Raises UpstreamSetupError when it has no Tester/src/main.py."""
    if acetest_home:
        home = acetest_home
    elif os.environ.get("ACETEST_HOME"):
        home = os.environ["ACETEST_HOME"]
    else:
        candidates = [os.path.join(os.getcwd(), "third_party", "ACETest"),
                      os.path.join(_PKG_ROOT, "third_party", "ACETest")]
        home = next((c for c in candidates if os.path.isfile(os.path.join(c, "Tester", "src", "main.py"))),
                    candidates[0])
    home = os.path.abspath(home)
    if not os.path.isfile(os.path.join(home, "Tester", "src", "main.py")):
        raise UpstreamSetupError(f"ACETest checkout not found at {home}: run git submodule update --init "
                                 "or pass --acetest-home")
    return home


def parse_upstream_options(upstream_args: list[str]) -> dict[str, str]:
    """Upstream's options as a dict (name without dashes -> value). Upstream
    silently ignores *all* options when one is unknown, so we refuse instead."""
    try:
        opts, rest = getopt.getopt(list(upstream_args), "", list(UPSTREAM_OPTIONS))
    except getopt.GetoptError as e:
        raise UpstreamSetupError(f"bad upstream option: {e} (upstream options: "
                                 + ", ".join("--" + o.rstrip("=") for o in UPSTREAM_OPTIONS) + ")") from e
    if rest:
        raise UpstreamSetupError(f"unexpected upstream argument {rest[0]!r} (upstream takes --name=value options)")
    return {k[2:]: v for k, v in opts}


def data_dir(home: str, framework: str) -> str:
    subs = DATA_SUBDIRS.get(framework)
    if subs is None:
        raise UpstreamSetupError(f"unknown upstream framework {framework!r} (use tf or torch)")
    for sub in subs:
        d = os.path.join(home, "Tester", "data", sub)
        if os.path.isfile(os.path.join(d, "API2OP.csv")):
            return d
    where = " or ".join(f"Tester/data/{sub}" for sub in subs)
    raise UpstreamSetupError(f"ACETest data not found in {os.path.join(home, 'Tester', 'data')}: put upstream's "
                             f"constraint data (API2OP.csv, op_json/, constraints/) in {where}")


def known_apis(data: str) -> set[str]:
    with open(os.path.join(data, "API2OP.csv")) as f:
        return {line.split(" ")[0].strip() for line in f if line.strip()}


def _with_work_path(upstream_args: list[str], work_path: Optional[str]) -> list[str]:
    out: list[str] = []
    skip = False
    for a in upstream_args:
        if skip:
            skip = False
            continue
        if a == "--work_path":
            skip = True
            continue
        if a.startswith("--work_path="):
            continue
        out.append(a)
    if work_path is not None:
        out.append(f"--work_path={work_path}")
    return out


# ------------------------------------------------------------ results

@dataclass
class ArmResult:
    """What one upstream run produced (rows appended to its res.csv files)."""

    label: str
    base_dir: str
    returncode: int = 0
    rows: list[dict] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    stats: dict[str, dict] = field(default_factory=dict)

    def total(self, key: str) -> int:
        return sum(r[key] for r in self.rows)

    @property
    def runs(self) -> int:
        return self.total("runs")

    @property
    def pass_rate(self) -> Optional[float]:
        runs = self.runs
        return (runs - self.total("invalid")) / runs if runs else None


def _res_files(base_dir: str, framework: str) -> list[str]:
    return sorted(glob.glob(os.path.join(base_dir, f"output_{framework}_*", "res.csv")))


def _line_counts(base_dir: str, framework: str) -> dict[str, int]:
    counts = {}
    for path in _res_files(base_dir, framework):
        with open(path) as f:
            counts[path] = sum(1 for _ in f)
    return counts


def parse_res_line(line: str) -> Optional[dict]:
    """One res.csv line: a result row as a dict, a message row as
    ``{"api", "mode", "message"}``, or None for the header and blank lines."""
    parts = [p.strip() for p in line.strip().split(",")]
    if not parts or not parts[0] or parts[0] == "api":
        return None
    if len(parts) >= 10:
        try:
            return {"api": parts[0], "mode": parts[1], "seconds": float(parts[2]), "samples": int(parts[3]),
                    "runs": int(parts[4]), "invalid": int(parts[5]), "crash": int(parts[6]),
                    "timeout": int(parts[7]), "oom": int(parts[8])}
        except ValueError:
            pass
    if len(parts) >= 3:
        return {"api": parts[0], "mode": parts[1], "message": ",".join(parts[2:])}
    return {"api": parts[0], "mode": "", "message": line.strip()}


def collect_results(label: str, base_dir: str, framework: str, before: dict[str, int]) -> ArmResult:
    """Rows upstream appended to ``<base_dir>/output_<fw>_*/res.csv`` since
    ``before`` (line counts per file), plus the filter statistics files."""
    res = ArmResult(label=label, base_dir=base_dir)
    for path in _res_files(base_dir, framework):
        with open(path) as f:
            lines = f.readlines()[before.get(path, 0):]
        for line in lines:
            row = parse_res_line(line)
            if row is None:
                continue
            if "message" in row:
                res.messages.append(f"{row['api']} {row['mode']}: {row['message']}")
            else:
                res.rows.append(row)
        apis = {r["api"] for r in res.rows}
        for api, st in read_stats(os.path.dirname(path)).items():
            if api in apis:
                res.stats[api] = st
    return res


def _pct(x: Optional[float]) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


def report(res: ArmResult, out: TextIO) -> None:
    runs, invalid = res.runs, res.total("invalid")
    print(f"[{res.label}] upstream pass rate: {_pct(res.pass_rate)} ({runs - invalid} of {runs} runs not invalid; "
          f"{invalid} invalid, {res.total('crash')} crash, {res.total('timeout')} timeout) "
          f"over {len({r['api'] for r in res.rows})} API(s); results in {res.base_dir}", file=out)
    for r in res.rows:
        rate = (r["runs"] - r["invalid"]) / r["runs"] if r["runs"] else None
        print(f"  {r['api']} {r['mode']}: {_pct(rate)} of {r['runs']} runs", file=out)
    for m in res.messages:
        print(f"  {m}", file=out)
    if res.stats:
        keys = ("generated", "discarded", "accepted", "explored", "forced", "unfiltered")
        tot = {k: sum(int(s.get(k, 0)) for s in res.stats.values()) for k in keys}
        score_t = sum(float(s.get("score_time_s", 0.0)) for s in res.stats.values())
        scored = sum(int(s.get("scored", 0)) for s in res.stats.values())
        per = f"; {1e6 * score_t / scored:.1f} us scoring per candidate" if scored else ""
        print(f"  filter: {tot['generated']} candidates generated, {tot['discarded']} discarded, "
              f"{tot['accepted']} accepted, {tot['explored']} explored, {tot['forced']} forced, "
              f"{tot['unfiltered']} unfiltered{per} (per API: <api folder>/{STATS_FILE})", file=out)


# ------------------------------------------------------------ running

def _normalise_filter(ml_filter) -> Optional[str]:
    if ml_filter in (None, False, "", "none", "off"):
        return None
    if ml_filter in (True, "models", "model", "offline", "on"):
        return "models"
    if ml_filter == "online":
        return "online"
    raise UpstreamSetupError(f"unknown --ml-filter value {ml_filter!r} (use --ml-filter or --ml-filter=online)")


def _bootstrap_cmd(python: str, home: str, mode: Optional[str], models: Optional[str], exploration: float,
                   seed: Optional[int], max_tries: int, warmup: int, args: list[str],
                   collect: Optional[str] = None, reallocate: bool = True, probes: int = 8,
                   repair: bool = True) -> list[str]:
    cmd = [python, "-m", "acetest_ml.upstream.bootstrap", "--home", home, "--filter", mode or "none",
           "--exploration", repr(float(exploration)), "--max-tries", str(int(max_tries)),
           "--warmup", str(int(warmup)), "--reallocate", str(int(bool(reallocate))),
           "--probes", str(int(probes)), "--repair", str(int(bool(repair)))]
    if collect:
        cmd += ["--collect", collect]
    if models:
        cmd += ["--models", models]
    if seed is not None:
        cmd += ["--seed", str(int(seed))]
    return cmd + ["--"] + list(args)


def run_upstream(upstream_args: list[str], *, ml_filter=None, models: str = DEFAULT_MODELS,
                 acetest_home: Optional[str] = None, compare: bool = False, exploration: float = 0.05,
                 seed: Optional[int] = None, max_tries: int = 100, warmup: int = 10,
                 python: Optional[str] = None, out: Optional[TextIO] = None,
                 log: Optional[str] = None, collect: Optional[str] = None, reallocate: bool = True,
                 probes: int = 8, out_dir: Optional[str] = None, repair: bool = True) -> int:
    """Run upstream's main.py (unmodified) in a subprocess, with the filter when
    ``ml_filter`` is ``"models"``/True or ``"online"``; with ``compare``, once
    without and once with it (same options and seed, separate work folders).
    Prints upstream's pass rate per run and returns 0, or prints a clear
    message and returns 1 when upstream fails or produces no results. Bad
    setup (no checkout, no data, bad options, missing model file) raises
    UpstreamSetupError. ``log``: file for upstream's own output (default: the
    terminal). ``out_dir`` (``--out``): the folder of the runs (upstream's
    ``--work_path``; with ``compare``, its ``baseline/`` and ``filtered/``);
    nothing is written into the current folder."""
    out = out or sys.stdout
    mode = _normalise_filter(ml_filter)
    if compare and mode is None:
        raise UpstreamSetupError("--compare needs --ml-filter (or --ml-filter=online) to compare against")
    if out_dir is not None and os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise UpstreamSetupError(f"--out: {out_dir} is a file, not a folder")
    home = locate_home(acetest_home)
    opts = parse_upstream_options(upstream_args)
    framework = opts.get("framework", "tf")
    data = data_dir(home, framework)
    if "filter" not in opts:
        api = opts.get("target_api")
        if not api:
            raise UpstreamSetupError("name the API to test with --target_api=<api> "
                                     "(or select many with --filter=all)")
        if api not in known_apis(data):
            raise UpstreamSetupError(f"API {api!r} is not in {os.path.join(data, 'API2OP.csv')}")
    models_path = None
    if mode == "models":
        models_path = os.path.abspath(models)
        if not os.path.isfile(models_path):
            raise UpstreamSetupError(f"model registry file not found: {models_path} (train models first, "
                                     "pass --models, or use --ml-filter=online)")
    elif mode == "online" and models and os.path.isfile(models):
        models_path = os.path.abspath(models)  # online training uses its kind, params and threshold
    if models_path is not None:
        # A broken YAML fails here, before upstream starts. The upstream process
        # loads it only when its first input is generated (see hook.install).
        load_registry(models_path)
    if collect:
        from .collect import check_collect_dir
        collect = os.path.abspath(collect)
        check_collect_dir(collect)
    if int(probes) < 1:
        raise UpstreamSetupError(f"--probes must be at least 1, got {probes}")
    src = os.path.join(home, "Tester", "src")
    user_work = opts.get("work_path") or out_dir
    if compare:
        if not user_work:
            raise UpstreamSetupError("--compare needs --out DIR: the folder for its baseline/ and "
                                     "filtered/ runs")
        root = os.path.abspath(user_work)
        os.makedirs(root, exist_ok=True)
        arms: list[tuple[str, Optional[str], Optional[str]]] = [
            ("baseline", None, os.path.join(root, "baseline")), ("filtered", mode, os.path.join(root, "filtered"))]
    else:
        arms = [("filtered" if mode else "baseline", mode, os.path.abspath(user_work) if user_work else None)]

    env = dict(os.environ)
    env["PYTHONPATH"] = _PKG_ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    if seed is not None:
        env["PYTHONHASHSEED"] = str(int(seed) % (2 ** 32))
    results: list[ArmResult] = []
    for label, arm_mode, work in arms:
        if work is not None and not os.path.isdir(os.path.dirname(work)):
            os.makedirs(os.path.dirname(work), exist_ok=True)
        base_dir = work or src
        before = _line_counts(base_dir, framework)
        cmd = _bootstrap_cmd(python or sys.executable, home, arm_mode, models_path, exploration, seed,
                             max_tries, warmup, _with_work_path(upstream_args, work), collect=collect,
                             reallocate=reallocate, probes=probes, repair=repair)
        if log:
            with open(log, "a") as logf:
                proc = subprocess.run(cmd, env=env, stdout=logf, stderr=subprocess.STDOUT)
        else:
            proc = subprocess.run(cmd, env=env)
        res = collect_results(label, base_dir, framework, before)
        res.returncode = proc.returncode
        if proc.returncode != 0:
            where = f" (its output is in {log})" if log else ""
            print(f"error: upstream ACETest ({label} run) exited with code {proc.returncode}{where}", file=out)
            return 1
        if not res.rows and not res.messages:
            print(f"error: upstream ACETest ({label} run) wrote no results under {base_dir}; it skips APIs that "
                  "already have an output folder there: use a new --work_path", file=out)
            return 1
        report(res, out)
        results.append(res)
    if compare and len(results) == 2:
        a, b = results[0].pass_rate, results[1].pass_rate
        ratio = f" (x{b / a:.2f})" if a and b is not None else ""
        print(f"compare: upstream pass rate {_pct(a)} without the filter, {_pct(b)} with it{ratio}", file=out)
    return 0


# ------------------------------------------------------------ command line

def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Options of ``acetest-ml acetest`` (for the CLI's subcommand parser)."""
    p.add_argument("--ml-filter", nargs="?", const="models", default=None, choices=("models", "online"),
                   help="filter generated inputs with the trained models (default) or train online")
    p.add_argument("--models", default=DEFAULT_MODELS,
                   help="model registry YAML (default: the registry shipped with the package)")
    p.add_argument("--acetest-home", default=None, help="ACETest checkout (default $ACETEST_HOME or third_party/ACETest)")
    p.add_argument("--compare", action="store_true", help="run without and with the filter and print "
                   "both (needs --out)")
    p.add_argument("--out", dest="out_dir", default=None,
                   help="folder of the runs (upstream's --work_path; with --compare its baseline/ "
                   "and filtered/ subfolders)")
    p.add_argument("--exploration", type=float, default=0.05, help="share of predicted-invalid inputs run anyway")
    p.add_argument("--max-tries", type=int, default=100, help="candidates drawn per run before giving up")
    p.add_argument("--warmup", type=int, default=10, help="online mode: labelled runs before the first training (and 3 of each class)")
    p.add_argument("--seed", type=int, default=None, help="seed for upstream's random generators")
    p.add_argument("--collect", default=None, metavar="DIR",
                   help="record every upstream run into the results store in DIR (for acetest-ml train --runs DIR)")
    p.add_argument("--no-reallocate", dest="reallocate", action="store_false",
                   help="do not move rounds off solver samples the filter rejects (filter each input only)")
    p.add_argument("--probes", type=int, default=8, help="random fills scored per solver sample")
    p.add_argument("--no-repair", dest="repair", action="store_false",
                   help="draw again a candidate that breaks a learned rule instead of editing it to meet the rule")
    p.add_argument("upstream_args", nargs=argparse.REMAINDER, help="-- then upstream main.py options")
    return p


def run_from_namespace(ns: argparse.Namespace) -> int:
    args = list(ns.upstream_args)
    if args and args[0] == "--":
        args = args[1:]
    if not (0.0 <= ns.exploration <= 1.0):
        raise UpstreamSetupError(f"--exploration must be between 0 and 1, got {ns.exploration}")
    if ns.max_tries < 1:
        raise UpstreamSetupError(f"--max-tries must be at least 1, got {ns.max_tries}")
    return run_upstream(args, ml_filter=ns.ml_filter, models=ns.models, acetest_home=ns.acetest_home,
                        compare=ns.compare, exploration=ns.exploration, seed=ns.seed,
                        max_tries=ns.max_tries, warmup=ns.warmup, collect=ns.collect,
                        reallocate=ns.reallocate, probes=ns.probes, out_dir=ns.out_dir, repair=ns.repair)


def main(argv: Optional[list[str]] = None) -> int:
    p = add_arguments(argparse.ArgumentParser(prog="acetest-ml acetest"))
    ns = p.parse_args(argv)
    try:
        return run_from_namespace(ns)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
