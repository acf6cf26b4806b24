"""What keeps APIs never-valid or low under ``--learn-rules``.

Reads a learned campaign folder (e.g. one arm of learned_coverage.py) and
puts every API whose pass rate is below ``--low`` into one group:

- ``skipped``: the campaign did not run it (skip reason);
- ``impossible-on-cpu``: no CPU kernel, a removed op, a sparse / quantized
  layout the generator does not make, an internal assert;
- ``dtype``: its top message is a missing kernel / dtype not implemented;
- ``unmatched``: no message family matches its top message;
- ``matched-no-rule``: a family matches, but no rule is read from it (the
  named argument is not resolved, or the failing input already satisfies it);
- ``rejected``: a rule from its top message was proposed and rejected;
- ``late``: the rule was kept but adopted after ``--late`` runs;
- ``adopted``: the rule was kept early, yet the API stays low (a second
  constraint or a relation the miner does not propose).

    python benchmarks/learned_blockers.py RUNS_DIR [--low 0.2]
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import re
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from acetest_ml.learn.patterns import candidates_from_message, clean_message, match_message, message_key  # noqa: E402
from acetest_ml.model import ApiSpec  # noqa: E402
from acetest_ml.store import Store  # noqa: E402

IMPOSSIBLE_RX = re.compile(r"with arguments from the 'CPU' backend|is not available in GraphDef version"
                           r"|expected sparse coordinate tensor layout|Could not find device for node"
                           r"|INTERNAL ASSERT FAILED")
DTYPE_RX = re.compile(r"No OpKernel was registered|not implemented for|Could not find device for node"
                      r"|is not supported for dtype|Value for attr .T. of \w+ is not in the list", re.I)


def classify(runs_dir: str, low: float = 0.2, late: int = 50) -> dict:
    out: dict = {"runs": runs_dir, "low": low, "apis": {}}
    with Store(runs_dir, create=False) as st:
        statuses = st.api_statuses()
        for api, status in sorted(statuses.items()):
            info = status.get("info") or {}
            counts = st.outcome_counts(api)
            executed = sum(counts.get(k, 0) for k in ("pass", "invalid", "crash", "timeout", "oom", "error"))
            passed = counts.get("pass", 0)
            rate = passed / executed if executed else 0.0
            if executed and rate >= low:
                continue
            row: dict = {"status": status["status"], "executed": executed, "pass_rate": rate}
            if not executed:
                row.update(group="skipped", reason=status.get("reason"))
                out["apis"][api] = row
                continue
            spec = ApiSpec.from_dict(info["spec"]) if info.get("spec") else None
            msgs: collections.Counter = collections.Counter()
            example: dict = {}
            for rec in st.records(api, executed_only=True):
                if rec.outcome != "invalid":
                    continue
                k = message_key(rec.message)
                msgs[k] += 1
                example.setdefault(k, (rec.message, rec.input))
            top = msgs.most_common(3)
            row["top"] = [(k, n) for k, n in top]
            rules = (info.get("learned") or {}).get("rules") or []
            row["rules"] = [(r["expr"], r["status"], r.get("adopted_at"), r.get("reason")) for r in rules]
            if not top:
                row["group"] = "other-outcome"
                out["apis"][api] = row
                continue
            k0 = top[0][0]
            msg, ai = example[k0]
            text = clean_message(msg)
            fams = [f.name for f, _ in match_message(text, spec.framework)] if spec else []
            cands = candidates_from_message(spec, ai, msg) if spec else []
            mine = [r for r in rules if r.get("key") == k0]
            row["families"] = fams
            if IMPOSSIBLE_RX.search(text):
                g = "impossible-on-cpu"
            elif DTYPE_RX.search(text):
                g = "dtype"
            elif not fams:
                g = "unmatched"
            elif not cands and not mine:
                g = "matched-no-rule"
            elif mine and all(r["status"] == "rejected" for r in mine):
                g = "rejected"
            elif mine and min(r.get("adopted_at") or 0 for r in mine if r["status"] != "rejected") > late:
                g = "late"
            else:
                g = "adopted"
            row["group"] = g
            out["apis"][api] = row
    groups = collections.Counter(v["group"] for v in out["apis"].values())
    out["groups"] = dict(groups.most_common())
    return out


def to_markdown(res: dict) -> str:
    lines = [f"APIs below {res['low']:.0%} pass in {res['runs']}: {len(res['apis'])}", "",
             "| group | APIs |", "|---|---|"]
    lines += [f"| {g} | {n} |" for g, n in res["groups"].items()]
    for g in res["groups"]:
        lines += ["", f"## {g}", ""]
        for api, v in res["apis"].items():
            if v["group"] != g:
                continue
            lines.append(f"- `{api}` pass {v['pass_rate']:.0%} of {v['executed']}"
                         + (f" ({v.get('reason')})" if g == "skipped" else ""))
            for k, n in v.get("top", [])[:2]:
                lines.append(f"    - {n}x `{k[:150]}`")
            for e, s, at, why in v.get("rules", [])[:4]:
                lines.append(f"    - rule `{e[:90]}` {s} at {at}" + (f" ({why})" if why and s == "rejected" else ""))
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs")
    p.add_argument("--low", type=float, default=0.2)
    p.add_argument("--late", type=int, default=50)
    p.add_argument("--out", default=None, help="write OUT.md and OUT.json")
    a = p.parse_args()
    from acetest_ml.errors import UserError
    try:
        res = classify(a.runs, a.low, a.late)
    except UserError as e:  # a folder without a store: one line, exit 2
        print(f"learned_blockers.py: {e}", file=sys.stderr)
        return 2
    md = to_markdown(res)
    if a.out:
        with open(a.out + ".json", "w") as f:
            json.dump(res, f, indent=1, default=str)
        with open(a.out + ".md", "w") as f:
            f.write(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
