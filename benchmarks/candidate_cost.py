"""What one candidate costs: microseconds per candidate, split into solve
(Z3), fill (decoding a model into an AbstractInput), features (batched) and
score (LightGBM, batched), on registry constraints without and with learned
rules (the rules of a ``--learn-rules`` campaign's ``learned_rules.yaml``).

    python benchmarks/candidate_cost.py --rules RUNS/learned_rules.yaml [--n 200]

Writes ``benchmarks/candidate_cost.json`` / ``.md``. All timings of one run
are measured on the same machine state, so compare them as ratios.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

import numpy as np  # noqa: E402

from acetest_ml.classify.kinds import get_kind  # noqa: E402
from acetest_ml.features import FeatureSchema  # noqa: E402
from acetest_ml.solve.registry import RegistryProblem  # noqa: E402
from acetest_ml.solve.rules import load_rules_file  # noqa: E402
from acetest_ml.solve.sampler import Sampler  # noqa: E402
from acetest_ml.spec import get_spec  # noqa: E402


class _TimedProblem:
    """Wraps a problem to time decode (fill) apart from the solver calls."""

    def __init__(self, p):
        self.p = p
        self.fill_s = 0.0

    def __getattr__(self, k):
        return getattr(self.p, k)

    def decode(self, model, rng):
        t = time.perf_counter()
        try:
            return self.p.decode(model, rng)
        finally:
            self.fill_s += time.perf_counter() - t


def cost(api: str, rules: list[str], n: int) -> dict:
    spec = get_spec(api)
    tp = _TimedProblem(RegistryProblem(spec, rules))
    s = Sampler([tp], seed=1)
    t = time.perf_counter()
    batch = [s.next() for _ in range(n)]
    total = time.perf_counter() - t
    schema = FeatureSchema.for_spec(spec)
    t = time.perf_counter()
    X = schema.matrix(batch)
    feat = time.perf_counter() - t
    kind = get_kind("lightgbm")()
    y = np.arange(len(X)) % 2  # timing only: any two-class labels
    kind.fit(X, y, {"n_estimators": 50, "verbose": -1})
    t = time.perf_counter()
    kind.predict_valid(X)
    score = time.perf_counter() - t
    us = 1e6 / n
    return {"rules": len(rules), "solve_us": (total - tp.fill_s) * us, "fill_us": tp.fill_s * us,
            "features_us": feat * us, "score_us": score * us,
            "total_us": (total + feat + score) * us, "solver_calls_per_candidate": s.stats.solver_calls / n}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rules", required=True, help="learned_rules.yaml of a --learn-rules campaign")
    p.add_argument("--n", type=int, default=200)
    a = p.parse_args()
    learned = load_rules_file(a.rules)
    res = {}
    for api, rules in sorted(learned.items()):
        res[api] = {"registry": cost(api, [], a.n), "learned": cost(api, rules, a.n)}
    with open(os.path.join(HERE, "candidate_cost.json"), "w") as f:
        json.dump(res, f, indent=1)
    lines = ["# Candidate cost (µs per candidate)", "",
             f"`python benchmarks/candidate_cost.py --rules {a.rules} --n {a.n}`", "",
             "| API | rules | solve | fill | features | score | total | solver calls/cand |", "|---|---|---|---|---|---|---|---|"]
    for api, arms in res.items():
        for arm, v in arms.items():
            lines.append(f"| {api} ({arm}) | {v['rules']} | {v['solve_us']:.0f} | {v['fill_us']:.0f} | "
                         f"{v['features_us']:.0f} | {v['score_us']:.0f} | {v['total_us']:.0f} | "
                         f"{v['solver_calls_per_candidate']:.2f} |")
    for arm in ("registry", "learned"):
        vals = [arms[arm] for arms in res.values()]
        if vals:
            lines.append(f"| mean ({arm}) | | {np.mean([v['solve_us'] for v in vals]):.0f} | "
                         f"{np.mean([v['fill_us'] for v in vals]):.0f} | {np.mean([v['features_us'] for v in vals]):.0f} | "
                         f"{np.mean([v['score_us'] for v in vals]):.0f} | {np.mean([v['total_us'] for v in vals]):.0f} | |")
    md = "\n".join(lines) + "\n"
    with open(os.path.join(HERE, "candidate_cost.md"), "w") as f:
        f.write(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
