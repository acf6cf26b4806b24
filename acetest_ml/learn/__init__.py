"""Learned constraints: what each API rejects, fed back into the solver.

Public surface:

- :class:`LearningSampler` (``sampling.py``): the campaign's sampler under
  ``--learn-rules``; learns from every executed run and re-solves with what
  it learned;
- :func:`learning_sampler` builds one for a campaign's API;
- :func:`learn_store` learns offline from a campaign folder
  (``acetest-ml rules learn``);
- :func:`write_rules_yaml` writes learned rules in the ``--rules`` format.

Inside: ``patterns.yaml`` + ``patterns.py`` (error messages -> rules),
``mine.py`` (rules mined from labelled runs), ``learner.py`` (the checks a
rule passes before it is kept), ``evaluate.py`` (a rule on a concrete input).
"""
from __future__ import annotations

import json
import os
from typing import Optional

from .learner import RuleLearner, learn_offline
from .sampling import LearningSampler, registry_check

__all__ = ["LearningSampler", "RuleLearner", "learning_sampler", "learn_store", "write_rules_yaml",
           "learned_from_summary"]

META_KEY = "learned_rules:"


def learning_sampler(cfg, spec, problems, notes: dict, seed: int, models_per_set, store) -> LearningSampler:
    """The sampler of one API of a ``--learn-rules`` campaign. Its state is
    written to the store's meta table whenever it changes."""
    base: list[str] = []
    source = notes.get("constraints", "registry")
    if source == "registry" and cfg.rules:
        from ..solve.rules import load_rules_file
        base = load_rules_file(cfg.rules).get(spec.name, [])
    prior: list[str] = []
    if getattr(cfg, "prior_rules", None):
        from ..solve.rules import load_rules_file
        prior = [e for e in load_rules_file(cfg.prior_rules).get(spec.name, []) if e not in base]

    def persist(info: dict) -> None:
        store.set_meta(META_KEY + spec.name, info)

    return LearningSampler(spec, problems, seed, source=source, base_rules=base,
                           models_per_set=models_per_set, on_change=persist,
                           cheap=getattr(cfg, "cheap", True), prior=prior,
                           known_crash_k=int(getattr(cfg, "known_crash_k", 0) or 0))


def learned_from_summary(summary: dict) -> dict[str, list[dict]]:
    """{api: [rule json, ...]} of a campaign summary's learned rules."""
    out = {}
    for api, v in summary.get("apis", {}).items():
        rules = (v.get("learned") or {}).get("rules")
        if rules:
            out[api] = rules
    return out


def write_rules_yaml(path: str, learned: dict[str, list[dict]], base: Optional[dict] = None,
                     header: str = "") -> str:
    """Write kept and probation rules per API (after the API's ``base``
    rules) as a rules file for ``--rules``; provenance goes in comments."""
    lines = ["# Rules learned by acetest-ml (acetest_ml/learn); usable with --rules."]
    if header:
        lines += [f"# {h}" for h in header.splitlines()]
    lines.append("rules:")
    apis = sorted(set(learned) | set(base or {}))
    n = 0
    for api in apis:
        items: list[tuple[str, str]] = [(e, "given") for e in (base or {}).get(api, [])]
        seen = {e for e, _ in items}
        for r in learned.get(api, []):
            if r.get("status") in ("kept", "probation") and r["expr"] not in seen:
                seen.add(r["expr"])
                note = f"{r.get('source')}, adopted at run {r.get('adopted_at')}, {r.get('status')}"
                items.append((r["expr"], note))
        if not items:
            continue
        lines.append(f"  {json.dumps(api)}:")
        for expr, note in items:
            lines.append(f"    - {json.dumps(expr)}  # {note}")
            n += 1
    if n == 0:
        lines[-1] = "rules: {}"
    tmp = path + ".tmp"
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(tmp, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(tmp, path)
    return path


def learn_store(runs_dir: str, apis: Optional[list[str]] = None) -> dict[str, RuleLearner]:
    """Learn rules offline from every API (or ``apis``) of a campaign folder."""
    from ..errors import UserError
    from ..model import ApiSpec
    from ..outcome import EXECUTED as EXECUTED_OUTCOMES
    from ..store import Store
    out: dict[str, RuleLearner] = {}
    with Store(runs_dir, create=False) as st:
        statuses = st.api_statuses()
        for api in apis or sorted(statuses):
            if api not in statuses:
                raise UserError(f"{runs_dir}: no runs of {api}")
            spec_d = (statuses[api].get("info") or {}).get("spec")
            if not spec_d:
                continue
            spec = ApiSpec.from_dict(spec_d)
            runs = [(r.input, r.outcome, r.message) for r in st.records(api)
                    if r.outcome in EXECUTED_OUTCOMES]
            if runs:
                out[api] = learn_offline(spec, runs, registry_check(spec))
    return out
