"""What one candidate costs: microseconds per candidate, split into solve
(Z3, plus mutating and checking pooled models under cheap sampling), fill
(decoding an assignment into an AbstractInput), features (batched) and
score (LightGBM, batched), on registry constraints without and with rules
(e.g. a ``--learn-rules`` campaign's ``learned_rules.yaml``), for the old
scheme (every candidate from Z3, ``Sampler(cheap=False)``) and cheap
candidates (``cheap=True``) in the same run. It also checks every cheap
assignment with Z3 (constraints broken) and counts distinct input shapes.

    python benchmarks/candidate_cost.py [--rules RUNS/learned_rules.yaml] [--apis A,B] [--n 200]

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
import z3  # noqa: E402

from acetest_ml.classify.kinds import get_kind  # noqa: E402
from acetest_ml.features import FeatureSchema  # noqa: E402
from acetest_ml.solve.registry import RegistryProblem  # noqa: E402
from acetest_ml.solve.rules import load_rules_file  # noqa: E402
from acetest_ml.solve.sampler import Sampler  # noqa: E402
from acetest_ml.spec import get_spec  # noqa: E402

DEFAULT_APIS = ["tf.raw_ops.BiasAdd", "tf.raw_ops.Conv2D", "tf.raw_ops.Split", "tf.raw_ops.MatrixBandPart",
                "torch.ops.aten.mm", "torch.ops.aten.gather", "torch.ops.aten.conv2d",
                "torch.ops.aten.addmm"]


class _TimedProblem:
    """Wraps a problem to time decoding (fill) apart from the rest."""

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

    def decode_values(self, values, rng):
        t = time.perf_counter()
        try:
            return self.p.decode_values(values, rng)
        finally:
            self.fill_s += time.perf_counter() - t


def _shape_key(ai) -> tuple:
    return tuple(sorted((k, str(getattr(v, "shape", None) if not isinstance(v, list)
                                else [getattr(x, "shape", x) for x in v])) for k, v in ai.args.items()))


def _broken(p: RegistryProblem, values: dict) -> bool:
    sub = [(var, z3.BoolVal(bool(values[n]), p.ctx) if z3.is_bool(var) else z3.IntVal(int(values[n]), p.ctx))
           for n, var in p._vars.items()]
    return not z3.is_true(z3.simplify(z3.substitute(z3.And(*p.formulas()), *sub)))


def cost(api: str, rules: list[str], n: int, cheap: bool, verify: bool) -> dict:
    spec = get_spec(api)
    p = RegistryProblem(spec, rules)
    tp = _TimedProblem(p)
    s = Sampler([tp], seed=1, cheap=cheap)  # type: ignore[list-item]
    batch, assignments = [], []
    t = time.perf_counter()
    for _ in range(n):
        batch.append(s.next())
        assignments.append(s.last_values)
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
    out = {"rules": len(rules), "cheap": cheap, "n": n, "solve_us": (total - tp.fill_s) * us,
           "fill_us": tp.fill_s * us, "features_us": feat * us, "score_us": score * us,
           "total_us": (total + feat + score) * us, "solver_calls_per_candidate": s.stats.solver_calls / n,
           "z3_share": (s.stats.z3_draws / n) if cheap else 1.0,
           "distinct_shapes": len({_shape_key(ai) for ai in batch}),
           "distinct_inputs": len({ai.dumps().split('"value_seed"')[0] for ai in batch})}
    if cheap and verify:
        out["broken"] = sum(_broken(p, v) for v in assignments if v is not None)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rules", help="rules file (e.g. learned_rules.yaml of a --learn-rules campaign): "
                   "its APIs are measured without and with their rules")
    p.add_argument("--apis", help="comma-separated APIs (default: a fixed list, or the rules file's APIs)")
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--no-verify", action="store_true", help="skip checking cheap assignments with Z3")
    a = p.parse_args()
    learned = load_rules_file(a.rules) if a.rules else {}
    apis = a.apis.split(",") if a.apis else (sorted(learned) if learned else DEFAULT_APIS)
    res: dict = {}
    for api in apis:
        res[api] = {}
        arms = [("registry", [])] + ([("learned", learned[api])] if learned.get(api) else [])
        for arm, rules in arms:
            for cheap in (False, True):
                key = f"{arm}, {'cheap' if cheap else 'old'}"
                res[api][key] = cost(api, rules, a.n, cheap, not a.no_verify)
                print(api, key, {k: round(v, 2) if isinstance(v, float) else v
                                 for k, v in res[api][key].items()}, flush=True)
    with open(os.path.join(HERE, "candidate_cost.json"), "w") as f:
        json.dump(res, f, indent=1)
    cmd = "python benchmarks/candidate_cost.py" + (f" --rules {a.rules}" if a.rules else "") + \
        (f" --apis {a.apis}" if a.apis else "") + f" --n {a.n}"
    lines = ["# Candidate cost (µs per candidate)", "",
             f"`{cmd}` (seed 1; old = every candidate from Z3, `Sampler(cheap=False)`; cheap = checked "
             "mutations of pooled Z3 models, `cheap=True`, the default). Solve includes mutating and "
             "checking; broken = cheap assignments that break a constraint, checked with Z3.", "",
             "| API | arm | rules | solve | fill | features | score | total | solver calls/cand | Z3 share | "
             "distinct shapes | broken |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for api, arms in res.items():
        for arm, v in arms.items():
            lines.append(f"| {api} | {arm} | {v['rules']} | {v['solve_us']:.0f} | {v['fill_us']:.0f} | "
                         f"{v['features_us']:.0f} | {v['score_us']:.0f} | {v['total_us']:.0f} | "
                         f"{v['solver_calls_per_candidate']:.2f} | {v['z3_share']:.2f} | "
                         f"{v['distinct_shapes']} of {v['n']} | {v.get('broken', '-')} |")
    lines += ["", "| arms | candidates | solve | fill | features | score | total | solver calls/cand | "
              "distinct shapes | broken |", "|---|---|---|---|---|---|---|---|---|---|"]
    summary = {}
    for scheme in ("old", "cheap"):
        vals = [v for arms in res.values() for k, v in arms.items() if k.endswith(scheme)]
        if not vals:
            continue
        m = {k: float(np.mean([v[k] for v in vals])) for k in
             ("solve_us", "fill_us", "features_us", "score_us", "total_us", "solver_calls_per_candidate")}
        m["candidates"] = sum(v["n"] for v in vals)
        m["distinct_shapes"] = sum(v["distinct_shapes"] for v in vals)
        m["broken"] = sum(v.get("broken", 0) for v in vals) if scheme == "cheap" else None
        summary[scheme] = m
        lines.append(f"| mean ({scheme}) | {m['candidates']} | {m['solve_us']:.0f} | {m['fill_us']:.0f} | "
                     f"{m['features_us']:.0f} | {m['score_us']:.0f} | {m['total_us']:.0f} | "
                     f"{m['solver_calls_per_candidate']:.2f} | {m['distinct_shapes']} | "
                     f"{m['broken'] if m['broken'] is not None else '-'} |")
    if "old" in summary and "cheap" in summary:
        lines += ["", f"Cheap / old total cost: {summary['cheap']['total_us'] / summary['old']['total_us']:.3f} "
                  f"({summary['old']['total_us'] / summary['cheap']['total_us']:.1f}x cheaper)."]
    with open(os.path.join(HERE, "candidate_cost.json"), "w") as f:
        json.dump({"apis": res, "mean": summary}, f, indent=1)
    md = "\n".join(lines) + "\n"
    with open(os.path.join(HERE, "candidate_cost.md"), "w") as f:
        f.write(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
