"""Before / after table of bench runs on one API list (issue 9: rules on the
values of small int tensors).

    python benchmarks/value_rules_compare.py BEFORE_DIR AFTER_DIR [--label-before X --label-after Y] [--md OUT.md --json OUT.json]

Each DIR is a ``python -m acetest_ml.bench`` output folder (its results.json).
Per API and pooled (all APIs; the ACETest-constraint and registry subsets):
pass rate, valid exec/s and candidates per executed input of the baseline and
learned+filter arms of each run, and learned+filter's valid exec/s as a ratio
of the same run's baseline (timings are only compared within a run).
"""
from __future__ import annotations

import argparse
import json
import os


def _arm(v: dict, arm: str) -> dict:
    return v.get(arm) or {}


def _pooled(apis: dict, names: list, arm: str) -> dict:
    ex = sum(_arm(apis[a], arm).get("executed") or 0 for a in names)
    ps = sum(_arm(apis[a], arm).get("passed") or 0 for a in names)
    el = sum(_arm(apis[a], arm).get("elapsed_s") or 0 for a in names)
    cand = sum(_arm(apis[a], arm).get("candidates") or 0 for a in names)
    return {"pass_rate": ps / ex if ex else None, "valid_exec_per_s": ps / el if el else None,
            "candidates_per_exec": cand / ex if ex else None, "executed": ex}


def _row(a: dict) -> dict:
    return {"pass_rate": a.get("pass_rate"), "valid_exec_per_s": a.get("valid_exec_per_s"),
            "candidates_per_exec": a.get("candidates_per_exec"), "executed": a.get("executed")}


def compare(before: str, after: str) -> dict:
    runs = {k: json.load(open(os.path.join(d, "results.json"))) for k, d in (("before", before), ("after", after))}
    apis = list(runs["after"]["apis"])
    out: dict = {"dirs": {"before": before, "after": after}, "apis": {}, "pooled": {}}
    for name in apis:
        out["apis"][name] = {k: {arm: _row(_arm(r["apis"][name], arm)) for arm in ("baseline", "learned_filter")}
                             for k, r in runs.items() if name in r["apis"]}
        out["apis"][name]["constraints"] = runs["after"]["apis"][name].get("constraints")
    scopes = {"all": apis,
              "acetest": [a for a in apis if out["apis"][a]["constraints"] == "acetest"],
              "registry": [a for a in apis if out["apis"][a]["constraints"] != "acetest"]}
    for scope, names in scopes.items():
        out["pooled"][scope] = {k: {arm: _pooled(r["apis"], [a for a in names if a in r["apis"]], arm)
                                    for arm in ("baseline", "learned_filter")} for k, r in runs.items()}
        out["pooled"][scope]["n"] = len(names)
    return out


def _f(x, pct=False, nd=1):
    if x is None:
        return "-"
    return f"{100 * x:.1f}%" if pct else f"{x:.{nd}f}"


def markdown(c: dict, lb: str, la: str) -> str:
    head = (f"| scope | APIs | pass base / l+f {lb} | pass base / l+f {la} | valid exec/s base / l+f {lb} (ratio) "
            f"| valid exec/s base / l+f {la} (ratio) | cand/exec l+f {lb} / {la} |")
    lines = [head, "|" + "---|" * 7]

    def cells(d: dict) -> tuple:
        b, f = d["before"], d["after"]

        def ratio(x):
            bb, ff = x["baseline"]["valid_exec_per_s"], x["learned_filter"]["valid_exec_per_s"]
            return f"{ff / bb:.2f}x" if bb and ff is not None else "-"
        return (f"{_f(b['baseline']['pass_rate'], True)} / {_f(b['learned_filter']['pass_rate'], True)}",
                f"{_f(f['baseline']['pass_rate'], True)} / {_f(f['learned_filter']['pass_rate'], True)}",
                f"{_f(b['baseline']['valid_exec_per_s'])} / {_f(b['learned_filter']['valid_exec_per_s'])} ({ratio(b)})",
                f"{_f(f['baseline']['valid_exec_per_s'])} / {_f(f['learned_filter']['valid_exec_per_s'])} ({ratio(f)})",
                f"{_f(b['learned_filter']['candidates_per_exec'], nd=2)} / {_f(f['learned_filter']['candidates_per_exec'], nd=2)}")
    for scope, d in c["pooled"].items():
        lines.append(f"| pooled {scope} | {d['n']} | " + " | ".join(cells(d)) + " |")
    for name, d in c["apis"].items():
        if "before" in d and "after" in d:
            lines.append(f"| {name} ({d['constraints']}) | 1 | " + " | ".join(cells(d)) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("before")
    ap.add_argument("after")
    ap.add_argument("--label-before", default="before")
    ap.add_argument("--label-after", default="after")
    ap.add_argument("--md")
    ap.add_argument("--json")
    a = ap.parse_args()
    c = compare(a.before, a.after)
    md = markdown(c, a.label_before, a.label_after)
    print(md)
    if a.md:
        open(a.md, "w").write(md)
    if a.json:
        json.dump(c, open(a.json, "w"), indent=1)


if __name__ == "__main__":
    main()
