"""``acetest-ml report DIR``: a whole campaign's report, from its store.

Writes ``DIR/report.md`` (per-API table, coverage summary with the APIs that
never passed grouped by their top reason, throughput over time) and
``DIR/throughput.png`` (executed and valid runs per second, from the rows'
``created`` timestamps). Works on a running or killed campaign too: it only
reads the store.
"""
from __future__ import annotations

import os
import re
from collections import defaultdict

from .errors import UserError
from .store import DB_NAME, Store
from .summary import summarize

EXECUTED = ("pass", "invalid", "crash", "timeout")


def throughput(store: Store, bins: int = 40) -> list[dict]:
    """Executed and valid runs per second in ``bins`` equal time slices from
    the first to the last recorded row."""
    rows = store.db.execute(
        "SELECT created, outcome FROM candidates WHERE outcome IN ('pass','invalid','crash','timeout')"
        " ORDER BY created").fetchall()
    if not rows:
        return []
    t0, t1 = rows[0][0], rows[-1][0]
    span = max(t1 - t0, 1e-6)
    bins = max(1, min(bins, len(rows)))
    width = span / bins
    out = [{"t": (i + 0.5) * width, "executed": 0, "valid": 0} for i in range(bins)]
    for created, outcome in rows:
        b = out[min(bins - 1, int((created - t0) / width))]
        b["executed"] += 1
        b["valid"] += outcome == "pass"
    for b in out:
        b["exec_per_s"] = b["executed"] / width
        b["valid_per_s"] = b["valid"] / width
    return out


def never_valid_reason(v: dict) -> str:
    """Why an API never passed: its status reason, else its top error."""
    if v.get("status") in ("skipped", "error") and v.get("reason"):
        return f"{v['status']}: {_first_words(v['reason'])}"
    if not v.get("executed"):
        return "no run executed"
    if v.get("top_errors"):
        return "invalid: " + _first_words(v["top_errors"][0][0])
    if v.get("crash") or v.get("timeout"):
        return "only crashes / timeouts"
    return "no valid run"


def _first_words(text: str, n: int = 12) -> str:
    """A reason without the API-specific details, so APIs group by it."""
    text = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", text or "")
    text = re.sub(r"tf\.raw_ops\.\w+|torch\.ops\.aten\.[\w.]+", "<api>", text)
    text = re.sub(r"\[[^\]]*\]|\d+", "#", text)
    return " ".join(text.split()[:n])


def build(out_dir: str) -> dict:
    if not os.path.isdir(out_dir):
        raise UserError(f"campaign folder not found: {out_dir}")
    if not os.path.isfile(os.path.join(out_dir, DB_NAME)):
        raise UserError(f"{out_dir} holds no campaign ({DB_NAME} missing)")
    with Store(out_dir, create=False) as store:
        summary = summarize(store)
        tp = throughput(store)
    apis = summary["apis"]
    valid = sorted(a for a, v in apis.items() if v.get("passed"))
    groups: dict[str, list[str]] = defaultdict(list)
    for a, v in apis.items():
        if not v.get("passed"):
            groups[never_valid_reason(v)].append(a)
    return {"summary": summary, "throughput": tp, "valid_apis": valid,
            "never_valid": sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))}


def write(out_dir: str) -> tuple[str, str]:
    rep = build(out_dir)
    png = os.path.join(out_dir, "throughput.png")
    _plot(rep["throughput"], png)
    md = os.path.join(out_dir, "report.md")
    with open(md, "w") as f:
        f.write(_markdown(out_dir, rep))
    return md, png


def _markdown(out_dir: str, rep: dict) -> str:
    s, o = rep["summary"], rep["summary"]["overall"]
    apis = s["apis"]
    n = len(apis)
    elapsed = sum(v.get("elapsed_s", 0.0) for v in apis.values())
    tp = rep["throughput"]
    wall = (tp[-1]["t"] + tp[0]["t"]) if tp else 0.0
    lines = [f"# Campaign report: {os.path.abspath(out_dir)}", "",
             f"- APIs: {n} ({o['apis_run']} ran, {o['apis_skipped']} skipped, "
             f"{o.get('apis_error', 0)} failed in our code)",
             f"- executed runs: {o['executed']}, valid (pass): {o['passed']} "
             f"(pooled valid rate {o['pooled_pass_rate']:.1%}, mean per API {o['mean_pass_rate']:.1%})",
             f"- crashes + timeouts: {sum(v.get('crash', 0) + v.get('timeout', 0) for v in apis.values())}, "
             f"unique crash signatures: {len(o['crash_signatures'])}",
             f"- wall time from first to last run: {wall:.0f} s; summed per-API time: {elapsed:.0f} s",
             ""]
    lines += ["## Coverage", "",
              f"{len(rep['valid_apis'])} of {n} APIs had at least one valid run "
              f"({len(rep['valid_apis']) / n:.1%})." if n else "No APIs.", ""]
    if rep["never_valid"]:
        lines += ["APIs never valid, grouped by their top reason:", "",
                  "| reason | APIs | examples |", "|---|---|---|"]
        for reason, group in rep["never_valid"]:
            ex = ", ".join(group[:4]) + (", ..." if len(group) > 4 else "")
            lines.append(f"| {_cell(reason)} | {len(group)} | {_cell(ex)} |")
        lines.append("")
    lines += ["## Throughput over time", "", "![throughput](throughput.png)", ""]
    if tp:
        peak = max(b["exec_per_s"] for b in tp)
        lines += [f"Executed runs per second: mean {o['executed'] / max(wall, 1e-9):.1f}, "
                  f"peak {peak:.1f} (in {len(tp)} slices of {tp[0]['t'] * 2:.1f} s).", ""]
    lines += ["## Per API", "",
              "| API | status | runs | valid rate | crashes | timeouts | signatures | time (s) | note |",
              "|---|---|---|---|---|---|---|---|---|"]
    for a, v in apis.items():
        note = v.get("reason") or ""
        if not note and v.get("top_errors") and not v.get("passed"):
            note = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", v["top_errors"][0][0])
        lines.append(f"| {a} | {v.get('status', '')} | {v.get('executed', 0)} | "
                     f"{v.get('pass_rate', 0.0):.1%} | {v.get('crash', 0)} | {v.get('timeout', 0)} | "
                     f"{len(v.get('crash_signatures', []))} | {v.get('elapsed_s', 0.0):.1f} | "
                     f"{_cell(note[:80])} |")
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return (text or "").replace("|", "\\|").replace("\n", " ")


def _plot(tp: list[dict], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 3.5))
    if tp:
        ts = [b["t"] for b in tp]
        ax.plot(ts, [b["exec_per_s"] for b in tp], label="executed / s")
        ax.plot(ts, [b["valid_per_s"] for b in tp], label="valid / s")
        ax.legend()
    ax.set_xlabel("seconds since the first run")
    ax.set_ylabel("runs per second")
    ax.set_title("campaign throughput")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
