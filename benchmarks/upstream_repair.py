"""The hook's online arm with rule repair against the same arm without it
and against upstream's Tester: one table over the upstream scope's APIs.

    python benchmarks/upstream_repair.py --upstream-arms DIR --arm LABEL=DIR [--arm LABEL=DIR ...] --out PREFIX

``--upstream-arms``: the scope's arm folder (``<api>.upstream.json`` rows,
benchmarks/results/upstream-scope-300/arms); each ``--arm`` folder holds
``<api>.json`` rows written by benchmarks/upstream_online_warmup.py. Writes
PREFIX.md and PREFIX.json (pooled as the scope report pools: invalid-run cut
over the APIs where upstream passes at least once by its definition, and over
those where one of its runs returned normally)."""
from __future__ import annotations

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))


def _load(path: str):
    try:
        with open(path) as f:
            row = json.load(f)
    except (OSError, ValueError):
        return None
    return row if isinstance(row, dict) and row.get("runs") else None


def main() -> int:
    from acetest_ml.bench import upstream as scope
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--upstream-arms", required=True)
    p.add_argument("--arm", action="append", required=True, metavar="LABEL=DIR")
    p.add_argument("--out", required=True, metavar="PREFIX")
    p.add_argument("--note", default="", help="a sentence on how and when the arms ran")
    a = p.parse_args()
    arms = []
    for spec in a.arm:
        label, sep, folder = spec.partition("=")
        if not sep or not label or not os.path.isdir(folder):
            print(f"upstream_repair: --arm {spec!r}: expected LABEL=DIR with an existing folder", file=sys.stderr)
            return 2
        arms.append((label, folder))
    if not os.path.isdir(a.upstream_arms):
        print(f"upstream_repair: --upstream-arms {a.upstream_arms}: not a folder", file=sys.stderr)
        return 2
    results: dict[str, dict] = {}
    for name in sorted(os.listdir(arms[0][1])):
        if not name.endswith(".json"):
            continue
        api = name[:-5]
        base = _load(os.path.join(a.upstream_arms, f"{api}.upstream.json"))
        if base is None:
            continue
        row = {"upstream": base}
        for label, folder in arms:
            r = _load(os.path.join(folder, name))
            if r is not None:
                row[label] = r
        results[api] = row
    if not results:
        print("upstream_repair: no API has both an upstream row and an arm row", file=sys.stderr)
        return 2
    labels = ["upstream"] + [lb for lb, _ in arms]
    pooled = scope.pooled(results, arms=labels)
    lines = ["# The hook's online arm with rule repair", "", a.note, "" if a.note else "",
             "Pooled over the APIs every arm ran. `up pass`: upstream's definition ((runs - invalid) / runs); "
             "`cut`: invalid-run cut against upstream's Tester over the APIs where it passes at least once by "
             "its definition, and over those where one of its runs returned normally.", "",
             "| arm | APIs | up pass | pass | cut | cut, APIs with a normal return | runs/s | valid runs/s | crash signatures |",
             "|---|---|---|---|---|---|---|---|---|"]
    for lb in labels:
        d = pooled[lb]
        cut = d.get("invalid_cut")
        cutn = d.get("invalid_cut_normal")
        lines.append(f"| {lb} | {d['apis']} | {scope._pct(d['up_pass_rate'])} | {scope._pct(d['pass_rate'])} | "
                     + (f"{scope._pct(cut)} ({d.get('invalid_cut_apis')} APIs)" if cut is not None else "-") + " | "
                     + (f"{scope._pct(cutn)} ({d.get('invalid_cut_normal_apis')} APIs)" if cutn is not None else "-")
                     + f" | {scope._num(d['runs_per_s'])} | {scope._num(d['valid_per_s'])} | "
                     f"{len(d['crash_signatures'])} |")
    lines += ["", "Per API: up pass (runs/s); `repaired`: candidates the hook edited to meet its learned rules.", "",
              "| API | " + " | ".join(labels) + " | repaired |", "|---|" + "---|" * (len(labels) + 1)]
    for api, row in results.items():
        cells = []
        for lb in labels:
            r = row.get(lb)
            cells.append(f"{scope._pct(r['up_pass_rate'])} ({scope._num(r.get('runs_per_s'))})" if r else "-")
        rep = (row.get(labels[-1], {}).get("filter") or {}).get("repaired")
        lines.append(f"| {api} | " + " | ".join(cells) + f" | {rep if rep is not None else '-'} |")
    with open(a.out + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(a.out + ".json", "w") as f:
        json.dump({"arms": labels, "pooled": pooled, "results": results}, f, indent=1)
    print("\n".join(lines[:len(labels) + 8]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
