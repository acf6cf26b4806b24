"""Per-API figures of a campaign, computed from its store (so a resumed
campaign reports its whole history), printed as a table and written to
``summary.json``."""
from __future__ import annotations

import json
import os
from collections import Counter
from typing import Any

from .outcome import EXECUTED, FAILURES, ApiStatus, Decision, Outcome
from .store import Store


def api_summary(store: Store, api: str, status: dict | None = None) -> dict:
    counts = store.outcome_counts(api)
    executed = sum(counts[k] for k in EXECUTED)
    sigs: Counter = Counter()
    top_errors: Counter = Counter()
    internal: Counter = Counter()
    decisions: Counter = Counter()
    by_decision: dict[str, Counter] = {}
    score_known = 0
    candidates = 0
    for row in store.db.execute(
            "SELECT decision, outcome, signature, exc_type, message, score FROM candidates WHERE api = ?",
            (api,)):
        decision, outcome, signature, exc_type, message, score = row
        candidates += 1
        decisions[decision] += 1
        by_decision.setdefault(decision, Counter())[outcome] += 1
        if score is not None:
            score_known += 1
        if outcome in FAILURES and signature:
            sigs[signature] += 1
        elif outcome == Outcome.CRASH:
            sigs["crash (no signature)"] += 1
        if outcome == Outcome.INVALID:
            top_errors[_short_error(exc_type, message)] += 1
        elif outcome == Outcome.INTERNAL:
            internal[_short_error(exc_type, message)] += 1
    status = status or {}
    info = status.get("info", {})
    elapsed = float(info.get("elapsed") or 0.0)
    out = {
        "status": status.get("status", ApiStatus.DONE.value),
        "executed": executed,
        "passed": counts[Outcome.PASS],
        "invalid": counts[Outcome.INVALID],
        "crash": counts[Outcome.CRASH],
        "timeout": counts[Outcome.TIMEOUT],
        "skipped_inputs": counts[Outcome.SKIPPED],
        "internal_errors": counts[Outcome.INTERNAL],
        "pass_rate": counts[Outcome.PASS] / executed if executed else 0.0,
        "exec_per_s": executed / elapsed if elapsed > 0 else 0.0,
        "valid_exec_per_s": counts[Outcome.PASS] / elapsed if elapsed > 0 else 0.0,
        "elapsed_s": elapsed,
        "crash_signatures": sorted(sigs),
        "top_errors": [[m, n] for m, n in top_errors.most_common(3)],
    }
    if internal:  # bugs of acetest-ml itself, never findings about the API
        out["internal_error_examples"] = [[m, n] for m, n in internal.most_common(3)]
    out["health"] = info.get("health") or "ok"
    if status.get("reason"):
        out["reason"] = status["reason"]
    if info.get("constraints"):
        out["constraints"] = info["constraints"]
    if info.get("learned"):
        out["learned"] = _learned(info["learned"])
    if "filter" in info or score_known:
        f = info.get("filter", {})
        accepted = by_decision.get(Decision.ACCEPT, Counter())
        explored = by_decision.get(Decision.EXPLORE, Counter())
        acc_exec = sum(accepted[k] for k in EXECUTED)
        exp_exec = sum(explored[k] for k in EXECUTED)
        out["filter"] = {
            "mode": f.get("mode"),
            "model": f.get("model"),
            "note": f.get("note"),
            "candidates": candidates,
            "discarded": decisions.get(Decision.DISCARD, 0),
            "known_crash_skipped": decisions.get(Decision.KNOWN, 0),
            "explored": decisions.get(Decision.EXPLORE, 0),
            # predicted invalid, run because they were worth it (filter policy rate)
            "cheap_runs": decisions.get(Decision.CHEAP, 0),
            # predicted invalid, run because the filter showed no lift on the API
            "bypass_runs": decisions.get(Decision.BYPASS, 0),
            "lift": f.get("lift"),
            "policy": (f.get("rate") or {}).get("policy", "score"),
            "rate": f.get("rate"),
            # the share of executed runs spent on exploration (bounded by --exploration)
            "explore_share": exp_exec / executed if executed else 0.0,
            "accepted": decisions.get(Decision.ACCEPT, 0),
            "warmup": decisions.get(Decision.WARMUP, 0),
            "candidates_per_exec": candidates / executed if executed else 0.0,
            "accepted_pass_rate": accepted[Outcome.PASS] / acc_exec if acc_exec else None,
            # share of predicted-invalid inputs that would have passed, measured
            # on the exploration runs; they come from the uncertain band just
            # below the threshold, so this over-estimates the discards' rate
            "est_false_discard_rate": explored[Outcome.PASS] / exp_exec if exp_exec else None,
            "score_us_per_candidate": f.get("score_us_per_candidate"),
            "retrains": f.get("retrains"),
            "labels": f.get("labels"),
            "crash_class": f.get("crash_class"),
            "crash_kept": f.get("crash_kept"),
            "crash_cut": f.get("crash_cut"),
            "int32_kept": f.get("int32_kept"),
            "known_crash_floor_runs": f.get("floor_runs"),
            "reject_floor_runs": f.get("reject_floor_runs"),
            "signatures_seen": f.get("signatures_seen"),
        }
    return out


def _learned(lr: dict) -> dict:
    """Learned rules of an API: every rule with its source, status and the
    executed run at which it was adopted (``--learn-rules``)."""
    rules = lr.get("rules", [])
    return {"rule_sets": len(lr.get("epochs", [])), "epochs": lr.get("epochs", []),
            "kept": sum(1 for r in rules if r.get("status") == "kept"),
            "probation": sum(1 for r in rules if r.get("status") == "probation"),
            "rejected": sum(1 for r in rules if r.get("status") == "rejected"),
            "rules": rules}


def _short_error(exc_type, message) -> str:
    first = (message or "").strip().splitlines()[0] if message else ""
    first = first.strip()[:160]
    t = (exc_type or "").split(".")[-1]
    return f"{t}: {first}" if t else first


def summarize(store: Store, cfg=None) -> dict:
    statuses = store.api_statuses()
    apis = sorted(set(store.apis()) | set(statuses))
    out: dict[str, Any] = {"apis": {}}
    for api in apis:
        st = statuses.get(api, {})
        if st.get("status") in (ApiStatus.SKIPPED, "error") and not store.count_executed(api):
            out["apis"][api] = {"status": str(st["status"]), "reason": st.get("reason"), "executed": 0,
                                "passed": 0, "invalid": 0, "crash": 0, "timeout": 0,
                                "pass_rate": 0.0, "exec_per_s": 0.0, "crash_signatures": []}
            continue
        out["apis"][api] = api_summary(store, api, st)
    ran = [v for v in out["apis"].values() if v.get("executed")]
    total = sum(v["executed"] for v in ran)
    passed = sum(v["passed"] for v in ran)
    out["overall"] = {
        "apis_run": len(ran),
        "apis_skipped": sum(1 for v in out["apis"].values() if v.get("status") == ApiStatus.SKIPPED),
        #: APIs our own code failed on (status "error", the reason names the exception)
        "apis_error": sum(1 for v in out["apis"].values() if v.get("status") == "error"),
        "apis_unhealthy": sorted(a for a, v in out["apis"].items() if v.get("health", "ok") != "ok"),
        "executed": total,
        "passed": passed,
        "pooled_pass_rate": passed / total if total else 0.0,
        "mean_pass_rate": sum(v["pass_rate"] for v in ran) / len(ran) if ran else 0.0,
        "crash_signatures": sorted({s for v in ran for s in v["crash_signatures"]}),
        "internal_errors": sum(v.get("internal_errors", 0) for v in out["apis"].values()),
    }
    learned = [v["learned"] for v in out["apis"].values() if v.get("learned")]
    if learned:
        out["overall"]["learned_rules"] = {
            "apis": sum(1 for v in learned if v["kept"] + v["probation"]),
            "kept": sum(v["kept"] for v in learned), "probation": sum(v["probation"] for v in learned),
            "rejected": sum(v["rejected"] for v in learned)}
    if cfg is not None:
        out["config"] = cfg.to_json()
    return out


def write_summary(out_dir: str, summary: dict) -> str:
    path = os.path.join(out_dir, "summary.json")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(summary, f, indent=1, sort_keys=False)
    os.replace(tmp, path)
    return path


def format_table(summary: dict) -> str:
    rows = [("API", "exec", "pass%", "invalid", "crash", "timeout", "sigs", "exec/s", "note")]
    for api, v in summary["apis"].items():
        if v.get("status") in (ApiStatus.SKIPPED, "error") and not v.get("executed"):
            rows.append((api, "-", "-", "-", "-", "-", "-", "-",
                         f"{v['status']}: " + (v.get("reason") or "")[:70]))
            continue
        notes = []
        if v.get("status") == "error":
            notes.append(f"error: {(v.get('reason') or '')[:60]}")
        if v.get("health", "ok") != "ok":
            notes.append(f"UNHEALTHY {v['health']}: {v.get('reason') or ''}")
        if v.get("internal_errors"):
            notes.append(f"{v['internal_errors']} internal errors (ours, see summary.json)")
        f = v.get("filter")
        if f:
            apr = f.get("accepted_pass_rate")
            fnote = f"filter {f.get('mode')}: cand {f['candidates']}, disc {f['discarded']}"
            if apr is not None:
                fnote += f", accepted pass {apr:.0%}"
            if f.get("bypass_runs"):
                fnote += f", bypass {f['bypass_runs']} (no lift)"
            if f.get("note"):
                fnote += f" ({f['note']})"
            notes.append(fnote)
        lr = v.get("learned")
        if lr:
            notes.append(f"learned {lr['kept'] + lr['probation']} rules ({lr['rejected']} rejected)")
        note = "; ".join(notes)
        rows.append((api, str(v["executed"]), f"{v['pass_rate']:.1%}", str(v["invalid"]),
                     str(v["crash"]), str(v["timeout"]), str(len(v["crash_signatures"])),
                     f"{v['exec_per_s']:.1f}", note))
    o = summary["overall"]
    rows.append(("overall (pooled)", str(o["executed"]), f"{o['pooled_pass_rate']:.1%}", "", "", "",
                 str(len(o["crash_signatures"])), "", f"mean pass rate {o['mean_pass_rate']:.1%}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for j, r in enumerate(rows):
        lines.append("  ".join(c.ljust(widths[i]) if i in (0, 8) else c.rjust(widths[i])
                               for i, c in enumerate(r)).rstrip())
        if j == 0:
            lines.append("-" * len(lines[0]))
    return "\n".join(lines)
