"""Benchmark figures: results.json, report.md and PNG plots."""
from __future__ import annotations

import json
import os
from statistics import mean
from typing import Any, Callable, Optional

ARMS = ("baseline", "filtered", "online", "learned", "learned_filter")


def _arm_row(s: dict) -> dict:
    f = s.get("filter") or {}
    return {
        "executed": s.get("executed", 0), "passed": s.get("passed", 0),
        "invalid": s.get("invalid", 0), "crash": s.get("crash", 0), "timeout": s.get("timeout", 0),
        "pass_rate": s.get("pass_rate", 0.0), "exec_per_s": s.get("exec_per_s", 0.0),
        "valid_exec_per_s": s.get("valid_exec_per_s", 0.0), "elapsed_s": s.get("elapsed_s", 0.0),
        "crash_signatures": s.get("crash_signatures", []),
        "candidates": f.get("candidates", s.get("executed", 0) + s.get("skipped_inputs", 0)),
        "discarded": f.get("discarded"),
        "candidates_per_exec": f.get("candidates_per_exec") if f else (1.0 if s.get("executed") else None),
        "learned_rules": (s.get("learned") or {}).get("kept", 0) + (s.get("learned") or {}).get("probation", 0)
        if s.get("learned") else None,
        "accepted_pass_rate": f.get("accepted_pass_rate"),
        "est_false_discard_rate": f.get("est_false_discard_rate"),
        "score_us_per_candidate": f.get("score_us_per_candidate"),
        "filter_mode": f.get("mode"), "filter_note": f.get("note"),
        "top_errors": s.get("top_errors", []),
    }


def build_results(cfg, train_sum: dict, train_rep: dict, arms: dict, clf: dict, timings: dict) -> dict:
    per_api: dict[str, dict] = {}
    for api in cfg.apis:
        tr = train_sum["apis"].get(api, {})
        rep = train_rep.get(api, {})
        row: dict[str, Any] = {
            "constraints": "acetest" if api in cfg.acetest_apis else "registry",
            "train": {"executed": tr.get("executed", 0), "valid": rep.get("valid", tr.get("passed", 0)),
                      "invalid": rep.get("invalid", tr.get("invalid", 0)),
                      "status": rep.get("status", tr.get("status")),
                      "reason": rep.get("reason") or tr.get("reason")},
        }
        for arm in ARMS:
            row[arm] = _arm_row(arms.get(arm, {"apis": {}})["apis"].get(api, {}))
        c = clf.get(api, {})
        row["classifier"] = {k: c.get(k) for k in ("accuracy", "balanced_accuracy", "precision", "recall",
                                                   "f1", "roc_auc", "n")} if c.get("status") == "evaluated" else None
        b, fl = row["baseline"]["pass_rate"], row["filtered"]["pass_rate"]
        row["ratio"] = fl / b if b else None
        row["lost_crash_signatures"] = sorted(set(row["baseline"]["crash_signatures"])
                                              - set(row["filtered"]["crash_signatures"]))
        row["trainable"] = (row["train"]["valid"] >= cfg.min_per_class
                            and row["train"]["invalid"] >= cfg.min_per_class)
        per_api[api] = row
    trainable = [a for a, r in per_api.items() if r["trainable"]]
    not_run = {a: sum(1 for v in arms.get(a, {}).get("apis", {}).values() if v.get("executed"))
               for a in ARMS if arms.get(a, {}).get("not_run")}
    results = {
        "not_run": not_run,
        "config": {"path": cfg.path, "quick": cfg.quick, "seed_train": cfg.seed_train,
                   "seed_eval": cfg.seed_eval, "budget_train": cfg.budget_train,
                   "budget_eval": cfg.budget_eval, "jobs": cfg.jobs, "exploration": cfg.exploration,
                   "min_per_class": cfg.min_per_class, "apis_listed": len(cfg.apis),
                   "filter_policy": cfg.filter_policy},
        "timings": timings,
        "overall": overall(per_api, trainable),
        "overall_all": overall(per_api, list(per_api)),
        "apis": per_api,
    }
    return results


def _pooled(rows: list[dict], arm: str) -> float:
    ex = sum(r[arm]["executed"] for r in rows)
    return sum(r[arm]["passed"] for r in rows) / ex if ex else 0.0


def _rate(rows, arm, key) -> float:
    el = sum(r[arm]["elapsed_s"] or 0.0 for r in rows)
    return sum(r[arm][key] for r in rows) / el if el else 0.0


def _mean(xs) -> Optional[float]:
    xs = [x for x in xs if x is not None]
    return mean(xs) if xs else None


def overall(per_api: dict, apis: list[str]) -> dict:
    rows = [per_api[a] for a in apis]
    ran = [r for r in rows if r["baseline"]["executed"]]
    out: dict[str, Any] = {"apis": list(apis), "n_apis": len(apis)}
    for arm in ARMS:
        out[f"{arm}_pass_rate"] = _pooled(ran, arm)
        out[f"{arm}_mean_pass_rate"] = _mean([r[arm]["pass_rate"] for r in ran]) or 0.0
        out[f"{arm}_exec_per_s"] = _rate(ran, arm, "executed")
        out[f"{arm}_valid_exec_per_s"] = _rate(ran, arm, "passed")
        out[f"{arm}_crash_signatures"] = len({s for r in ran for s in r[arm]["crash_signatures"]})
    for arm in ARMS:
        ex = sum(r[arm]["executed"] for r in ran)
        out[f"{arm}_candidates_per_exec"] = (sum(r[arm]["candidates"] or 0 for r in ran) / ex) if ex else None
    bv = {id(r): r["baseline"]["valid_exec_per_s"] for r in ran}
    for arm in ("learned", "learned_filter"):
        out[f"{arm}_valid_ratio"] = (out[f"{arm}_valid_exec_per_s"] / out["baseline_valid_exec_per_s"]
                                     if out["baseline_valid_exec_per_s"] else None)
        out[f"{arm}_apis_valid_ge_0.8x"] = sum(1 for r in ran if r[arm]["executed"]
                                               and r[arm]["valid_exec_per_s"] >= 0.8 * bv[id(r)])
    b = out["baseline_pass_rate"]
    out["ratio_pooled"] = out["filtered_pass_rate"] / b if b else None
    out["online_ratio_pooled"] = out["online_pass_rate"] / b if b else None
    out["ratio_mean"] = _mean([r["ratio"] for r in ran])
    out["mean_accuracy"] = _mean([(r["classifier"] or {}).get("accuracy") for r in ran])
    out["mean_balanced_accuracy"] = _mean([(r["classifier"] or {}).get("balanced_accuracy") for r in ran])
    out["mean_roc_auc"] = _mean([(r["classifier"] or {}).get("roc_auc") for r in ran])
    out["mean_score_us_per_candidate"] = _mean([r["filtered"]["score_us_per_candidate"] for r in ran])
    out["mean_candidates_per_exec"] = _mean([r["filtered"]["candidates_per_exec"] for r in ran])
    out["lost_crash_signatures"] = sorted({f"{a}: {s}" for a in apis for s in per_api[a]["lost_crash_signatures"]})
    return out


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _num(x, fmt="{:.1f}") -> str:
    return "-" if x is None else fmt.format(x)


def _scope_table(results: dict, columns: list[str], row: Callable[[dict], list[str]],
                 when: Callable[[dict], bool] = lambda o: True) -> str:
    """A markdown table with one row per scope (``overall``, ``overall_all``)
    for which ``when`` holds: the scope's name, then ``row(figures)``."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for scope in ("overall", "overall_all"):
        o = results[scope]
        if when(o):
            lines.append("| " + " | ".join([scope] + row(o)) + " |")
    return "\n".join(lines)


def _three(o: dict, keys: tuple[str, ...], fmt: Callable[[Any], str]) -> str:
    return " / ".join(fmt(o[k]) for k in keys)


def overall_table(results: dict) -> str:
    return _scope_table(results, [
        "scope", "APIs", "baseline pass", "filtered pass", "online pass", "ratio (filtered/baseline)",
        "mean pass base / filt / online", "mean held-out acc / bal. acc", "exec/s base / filt / online",
        "valid exec/s base / filt / online", "scoring µs/cand", "crash sigs base / filt / online", "lost sigs",
    ], lambda o: [
        str(o["n_apis"]), _pct(o["baseline_pass_rate"]), _pct(o["filtered_pass_rate"]),
        _pct(o["online_pass_rate"]), _num(o["ratio_pooled"], "{:.2f}x"),
        _three(o, ("baseline_mean_pass_rate", "filtered_mean_pass_rate", "online_mean_pass_rate"), _pct),
        _three(o, ("mean_accuracy", "mean_balanced_accuracy"), _pct),
        _three(o, ("baseline_exec_per_s", "filtered_exec_per_s", "online_exec_per_s"), _num),
        _three(o, ("baseline_valid_exec_per_s", "filtered_valid_exec_per_s", "online_valid_exec_per_s"), _num),
        _num(o["mean_score_us_per_candidate"]),
        _three(o, ("baseline_crash_signatures", "filtered_crash_signatures", "online_crash_signatures"), str),
        str(len(o["lost_crash_signatures"])),
    ])


def learned_table(results: dict) -> str:
    """The learned-rules arms beside the baseline (pooled)."""
    return _scope_table(results, [
        "scope", "APIs", "pass base / learned / learned+filter",
        "valid exec/s base / learned / learned+filter", "valid exec/s ratio learned / learned+filter",
        "APIs >= 0.8x baseline valid exec/s learned / learned+filter", "cand/exec learned / learned+filter",
    ], lambda o: [
        str(o["n_apis"]),
        _three(o, ("baseline_pass_rate", "learned_pass_rate", "learned_filter_pass_rate"), _pct),
        _three(o, ("baseline_valid_exec_per_s", "learned_valid_exec_per_s", "learned_filter_valid_exec_per_s"),
               _num),
        _three(o, ("learned_valid_ratio", "learned_filter_valid_ratio"), lambda x: _num(x, "{:.2f}x")),
        _three(o, ("learned_apis_valid_ge_0.8x", "learned_filter_apis_valid_ge_0.8x"), str),
        _three(o, ("learned_candidates_per_exec", "learned_filter_candidates_per_exec"),
               lambda x: _num(x, "{:.2f}")),
    ], when=lambda o: "learned_pass_rate" in o)


def report_md(results: dict) -> str:
    c = results["config"]
    o = results["overall"]
    out = ["# acetest-ml benchmark", "",
           f"{'Quick subset' if c['quick'] else 'Full list'}: {c['apis_listed']} APIs; training seed "
           f"{c['seed_train']} ({c['budget_train']} executions per API), evaluation seed {c['seed_eval']} "
           f"({c['budget_eval']} executions per API and arm), exploration {c['exploration']}, "
           f"filter policy {c.get('filter_policy', 'score')}, "
           f"{c['jobs']} workers; wall time {results['timings'].get('total_s', 0):.0f} s.", "",
           f"`overall`: the {o['n_apis']} APIs whose training data had at least {c['min_per_class']} passing "
           f"and {c['min_per_class']} failing runs (a classifier can be trained); `overall_all`: all "
           f"{results['overall_all']['n_apis']} APIs. Pass rates are pooled (all executions of the scope) "
           "unless marked mean.", ""]
    for arm, n in (results.get("not_run") or {}).items():
        out += [f"Arm `{arm}` was not run to the end in this bench (`--arms`): its figures are what its "
                f"folder held ({n} of {c['apis_listed']} APIs with runs); pooled figures cover those.", ""]
    out += ["## Overall", "", overall_table(results), ""]
    out += ["## Learned rules (`--learn-rules`, without and with the classifier)", "", learned_table(results), ""]
    lost = results["overall_all"]["lost_crash_signatures"]
    out += ["Crash signatures found by the baseline arm and missed by the filtered arm: "
            + ("; ".join(lost) if lost else "none") + ".", ""]
    out += ["## Per API", "",
            "| API | constr. | train pass/fail | base pass | filt pass | online pass | ratio | acc | bal. acc "
            "| AUC | cand/exec | µs/cand | exec/s b/f/o | valid exec/s b/f/o | sigs b/f/o | lost "
            "| learned / +filter pass | valid exec/s learned / +filter | cand/exec learned / +filter "
            "| learned rules |",
            "|" + "---|" * 20]
    for api, r in results["apis"].items():
        cl = r["classifier"] or {}
        b, f, on = r["baseline"], r["filtered"], r["online"]
        out.append(
            f"| {api} | {r['constraints']} | {r['train']['valid']}/{r['train']['invalid']} "
            f"| {_pct(b['pass_rate'])} | {_pct(f['pass_rate'])} | {_pct(on['pass_rate'])} "
            f"| {_num(r['ratio'], '{:.2f}')} | {_pct(cl.get('accuracy'))} | {_pct(cl.get('balanced_accuracy'))} "
            f"| {_num(cl.get('roc_auc'), '{:.3f}')} | {_num(f['candidates_per_exec'])} "
            f"| {_num(f['score_us_per_candidate'])} "
            f"| {_num(b['exec_per_s'])}/{_num(f['exec_per_s'])}/{_num(on['exec_per_s'])} "
            f"| {_num(b['valid_exec_per_s'])}/{_num(f['valid_exec_per_s'])}/{_num(on['valid_exec_per_s'])} "
            f"| {len(b['crash_signatures'])}/{len(f['crash_signatures'])}/{len(on['crash_signatures'])} "
            f"| {len(r['lost_crash_signatures'])} "
            f"| {_pct(r['learned']['pass_rate'])} / {_pct(r['learned_filter']['pass_rate'])} "
            f"| {_num(r['learned']['valid_exec_per_s'])} / {_num(r['learned_filter']['valid_exec_per_s'])} "
            f"| {_num(r['learned']['candidates_per_exec'], '{:.2f}')} / "
            f"{_num(r['learned_filter']['candidates_per_exec'], '{:.2f}')} "
            f"| {_num(r['learned_filter']['learned_rules'], '{}')} |")
    never = [a for a, r in results["apis"].items() if r["baseline"]["executed"] and r["baseline"]["passed"] == 0
             and r["train"]["valid"] == 0]
    if never:
        out += ["", "## APIs that never passed (generator problems)", ""]
        for a in never:
            errs = results["apis"][a]["baseline"]["top_errors"]
            msg = errs[0][0] if errs else results["apis"][a]["train"].get("reason") or "-"
            out.append(f"- {a}: {msg}")
    out += ["", "Plots: `pass_rate_per_api.png`, `overall.png`.", ""]
    return "\n".join(out)


def plots(results: dict, out_dir: str) -> list[str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    apis = list(results["apis"])
    rows = [results["apis"][a] for a in apis]
    paths = []
    fig, ax = plt.subplots(figsize=(max(8, 0.18 * len(apis) + 4), 5))
    xs = range(len(apis))
    w = 0.28
    for k, (arm, color) in enumerate((("baseline", "#999999"), ("filtered", "#1f77b4"), ("online", "#ff7f0e"))):
        ax.bar([x + (k - 1) * w for x in xs], [100 * r[arm]["pass_rate"] for r in rows], w, label=arm, color=color)
    ax.set_xticks(list(xs))
    ax.set_xticklabels([a.replace("tf.raw_ops.", "tf.").replace("torch.ops.aten.", "aten.") for a in apis],
                       rotation=90, fontsize=6)
    ax.set_ylabel("pass rate (%)")
    ax.set_title("Pass rate per API: without vs with the ML filter")
    ax.legend()
    fig.tight_layout()
    p = os.path.join(out_dir, "pass_rate_per_api.png")
    fig.savefig(p, dpi=110)
    plt.close(fig)
    paths.append(p)

    fig, ax = plt.subplots(figsize=(6, 4))
    scopes = ("overall", "overall_all")
    for k, (arm, color) in enumerate((("baseline", "#999999"), ("filtered", "#1f77b4"), ("online", "#ff7f0e"))):
        vals = [100 * results[s][f"{arm}_pass_rate"] for s in scopes]
        ax.bar([i + (k - 1) * w for i in range(2)], vals, w, label=arm, color=color)
        for i, v in enumerate(vals):
            ax.text(i + (k - 1) * w, v + 1, f"{v:.0f}", ha="center", fontsize=8)
    ax.set_xticks([0, 1])
    ax.set_xticklabels([f"{s} ({results[s]['n_apis']} APIs)" for s in scopes])
    ax.set_ylabel("pooled pass rate (%)")
    ax.set_ylim(0, 105)
    ax.set_title("Overall pass rate")
    ax.legend()
    fig.tight_layout()
    p = os.path.join(out_dir, "overall.png")
    fig.savefig(p, dpi=110)
    plt.close(fig)
    paths.append(p)
    return paths


def write_outputs(results: dict, out_dir: str) -> None:
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    with open(os.path.join(out_dir, "report.md"), "w") as f:
        f.write(report_md(results))
    plots(results, out_dir)
