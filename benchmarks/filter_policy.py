"""Filter policy score against rate on one bench list (issue 9's 0.8x target).

    python benchmarks/filter_policy.py --config CFG --out DIR [--arms baseline filtered learned_filter]

Runs ``python -m acetest_ml.bench`` twice on the same list and seeds, once
with ``--filter-policy score`` and once with ``rate`` (each with its own
baseline arm, so every ratio is against a baseline measured in the same
run), then writes ``filter_policy.md`` / ``.json`` (``--write-to``, default
benchmarks/): per API and pooled, pass rate, valid executions per second,
candidates per executed input and the valid-exec/s ratio to the run's own
baseline. ``--report-only`` rebuilds the report from DIR.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
POLICIES = ("score", "rate")


def run(cfg: str, out: str, policy: str, arms: list[str], data: str) -> None:
    cmd = [sys.executable, "-m", "acetest_ml.bench", "--config", cfg, "--out", os.path.join(out, policy),
           "--filter-policy", policy, "--arms", *arms, "--acetest-data", data, "--no-progress"]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=REPO, check=True)


def _pooled(rows: list[dict], arm: str) -> dict:
    ex = sum(r[arm]["executed"] for r in rows)
    passed = sum(r[arm]["passed"] for r in rows)
    secs = sum(r[arm]["elapsed_s"] or 0.0 for r in rows)
    cand = sum(r[arm].get("candidates") or r[arm]["executed"] for r in rows)
    return {"executed": ex, "pass_rate": passed / ex if ex else None,
            "valid_exec_per_s": passed / secs if secs else None,
            "candidates_per_exec": cand / ex if ex else None}


def collect(out: str, arms: list[str]) -> dict:
    res: dict = {"arms": arms, "policies": {}}
    for pol in POLICIES:
        with open(os.path.join(out, pol, "results.json")) as f:
            r = json.load(f)
        per = r["apis"]
        apis = [a for a, v in per.items() if v["baseline"]["executed"]]
        rows = {a: {arm: {k: per[a][arm].get(k) for k in ("executed", "passed", "pass_rate", "exec_per_s",
                                                            "valid_exec_per_s", "elapsed_s", "candidates")}
                      for arm in arms} for a in apis}
        pooled = {arm: _pooled(list(rows.values()), arm) for arm in arms}
        for arm in arms:
            b = pooled["baseline"]["valid_exec_per_s"]
            pooled[arm]["valid_ratio"] = pooled[arm]["valid_exec_per_s"] / b if b else None
            pooled[arm]["apis_ge_0_8x"] = sum(
                1 for a in apis if rows[a][arm]["executed"]
                and (rows[a][arm]["valid_exec_per_s"] or 0) >= 0.8 * (rows[a]["baseline"]["valid_exec_per_s"] or 0))
        res["policies"][pol] = {"apis": rows, "pooled": pooled, "n_apis": len(apis),
                                "wall_s": r.get("timings", {}).get("total_s")}
    return res


def _p(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _n(x, fmt="{:.1f}") -> str:
    return "-" if x is None else fmt.format(x)


def markdown(res: dict, command: str) -> str:
    arms = [a for a in res["arms"] if a != "baseline"]
    lines = ["# Filter policy: score against rate", "", f"`{command}`", "",
             "Two bench runs on the same list and seeds, one per policy, each with its own baseline arm "
             "(ratios are to the baseline of the same run). `rate`: a predicted-invalid input runs when "
             "its score / the API's invalid-run time >= the API's valid runs per second so far.", "",
             "## Pooled", "",
             "| policy | arm | executed | pass rate | valid exec/s | x baseline | APIs >= 0.8x | cand/exec |",
             "|---|---|---|---|---|---|---|---|"]
    for pol, r in res["policies"].items():
        for arm in res["arms"]:
            o = r["pooled"][arm]
            lines.append(f"| {pol} | {arm} | {o['executed']} | {_p(o['pass_rate'])} | "
                         f"{_n(o['valid_exec_per_s'])} | {_n(o['valid_ratio'], '{:.2f}x')} | "
                         f"{o['apis_ge_0_8x']} of {r['n_apis']} | {_n(o['candidates_per_exec'], '{:.2f}')} |")
    lines += ["", "## Per API (valid exec/s, pass rate; score -> rate)", "",
              "| API | baseline (score run / rate run) | " + " | ".join(arms) + " |",
              "|---|---|" + "---|" * len(arms)]
    s, t = res["policies"]["score"]["apis"], res["policies"]["rate"]["apis"]
    for api in s:
        if api not in t:
            continue
        cells = [f"{_n(s[api]['baseline']['valid_exec_per_s'])} / {_n(t[api]['baseline']['valid_exec_per_s'])}"]
        for arm in arms:
            cells.append(f"{_n(s[api][arm]['valid_exec_per_s'])} ({_p(s[api][arm]['pass_rate'])}) -> "
                         f"{_n(t[api][arm]['valid_exec_per_s'])} ({_p(t[api][arm]['pass_rate'])})")
        lines.append(f"| {api} | " + " | ".join(cells) + " |")
    if res.get("note"):
        lines += ["", res["note"]]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--arms", nargs="+", default=["baseline", "filtered", "learned_filter"])
    ap.add_argument("--acetest-data", default=os.path.join(REPO, "..", "shared", "acetest-data"))
    ap.add_argument("--write-to", default=HERE)
    ap.add_argument("--note", default=None)
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args(argv)
    if "baseline" not in args.arms:
        args.arms = ["baseline"] + args.arms
    t0 = time.time()
    if not args.report_only:
        for pol in POLICIES:
            run(args.config, args.out, pol, args.arms, args.acetest_data)
    try:
        res = collect(args.out, args.arms)
    except (OSError, ValueError, KeyError) as e:
        print(f"filter_policy: cannot read the bench results in {args.out}: {e}", file=sys.stderr)
        return 2
    res["when"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t0))
    res["note"] = args.note
    command = "python benchmarks/filter_policy.py --config " + os.path.basename(args.config) + " --out DIR"
    os.makedirs(args.write_to, exist_ok=True)
    with open(os.path.join(args.write_to, "filter_policy.json"), "w") as f:
        json.dump(res, f, indent=1)
    with open(os.path.join(args.write_to, "filter_policy.md"), "w") as f:
        f.write(markdown(res, command))
    print(markdown(res, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
