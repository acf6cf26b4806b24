"""How many APIs each error-message family serves (acetest_ml/learn/patterns.yaml).

Reads the invalid runs of one or more campaign folders (e.g. the
``--all --budget 10`` campaigns of TF and torch) and counts, per family, the
APIs with a message it matches and the APIs for which it yields a rule the
failing input violates (the learner's first check). Writes
``benchmarks/message_families.md`` and ``.json``.

    python benchmarks/message_families.py RUNS_DIR [RUNS_DIR ...]
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from acetest_ml.learn.patterns import candidates_from_message, clean_message, match_message  # noqa: E402
from acetest_ml.model import ApiSpec  # noqa: E402
from acetest_ml.store import Store  # noqa: E402


def count(dirs: list[str]) -> dict:
    matched = collections.defaultdict(set)
    ruled = collections.defaultdict(set)
    never_valid_ruled = collections.defaultdict(set)
    apis_invalid = set()
    apis_ruled = set()
    never_valid = set()
    by_fw = collections.Counter()
    for d in dirs:
        with Store(d, create=False) as st:
            statuses = st.api_statuses()
            for api, status in statuses.items():
                spec_d = (status.get("info") or {}).get("spec")
                if not spec_d:
                    continue
                spec = ApiSpec.from_dict(spec_d)
                counts = st.outcome_counts(api)
                if counts["invalid"] == 0:
                    continue
                apis_invalid.add(api)
                by_fw[spec.framework] += 1
                nv = counts["pass"] == 0
                if nv:
                    never_valid.add(api)
                seen_msgs = set()
                for rec in st.records(api, executed_only=True):
                    if rec.outcome != "invalid" or rec.message in seen_msgs:
                        continue
                    seen_msgs.add(rec.message)
                    for fam, _ in match_message(clean_message(rec.message), spec.framework):
                        matched[fam.name].add(api)
                    for c in candidates_from_message(spec, rec.input, rec.message):
                        ruled[c.family].add(api)
                        apis_ruled.add(api)
                        if nv:
                            never_valid_ruled[c.family].add(api)
    fams = sorted(set(matched) | set(ruled), key=lambda f: -len(ruled.get(f, ())))
    return {
        "runs": dirs,
        "apis_with_invalid_runs": len(apis_invalid),
        "apis_never_valid": len(never_valid),
        "apis_with_a_rule": len(apis_ruled),
        "never_valid_apis_with_a_rule": len(apis_ruled & never_valid),
        "families": {f: {"apis_matched": len(matched.get(f, ())), "apis_ruled": len(ruled.get(f, ())),
                         "never_valid_apis_ruled": len(never_valid_ruled.get(f, ()))} for f in fams},
    }


def to_markdown(res: dict) -> str:
    lines = [f"Message families over {', '.join(res['runs'])}", "",
             f"APIs with invalid runs: {res['apis_with_invalid_runs']}; with a rule from some family: "
             f"{res['apis_with_a_rule']}; never-valid APIs: {res['apis_never_valid']}, of which with a rule: "
             f"{res['never_valid_apis_with_a_rule']}", "",
             "| family | APIs matched | APIs with a rule | never-valid APIs with a rule |",
             "|---|---|---|---|"]
    for f, v in res["families"].items():
        lines.append(f"| {f} | {v['apis_matched']} | {v['apis_ruled']} | {v['never_valid_apis_ruled']} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+")
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "message_families"))
    a = p.parse_args()
    from acetest_ml.errors import UserError
    try:
        res = count(a.runs)
    except UserError as e:  # a folder without a store: one line, exit 2
        print(f"message_families.py: {e}", file=sys.stderr)
        return 2
    with open(a.out + ".json", "w") as f:
        json.dump(res, f, indent=1)
    md = to_markdown(res)
    with open(a.out + ".md", "w") as f:
        f.write(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
