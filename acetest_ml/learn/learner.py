"""The rule learner of one API: observes labelled runs, proposes rules from
error messages (patterns.py) and from the runs themselves (mine.py), and
keeps only rules that pass its checks.

Life of a rule:

1. *candidate*: stated by an invalid run's message (and violated by that
   run), or mined from the passing / invalid runs so far;
2. checked before adoption: it must hold in every passing run seen so far,
   compile against the spec and leave the constraints satisfiable together
   with the rules already active (``check_sat``); otherwise ``rejected``;
3. *probation*: active (the sampler solves with it) for ``window`` executed
   runs; then it is ``kept`` when it lowered what it targets by a quarter
   or more (the share of runs failing with its message; a mined rule: the
   message most of the invalid runs it excludes failed with) without
   raising the invalid rate by more than ``RAISED``, else ``rejected``;
4. a kept rule that a later passing run violates is ``rejected`` too;
5. the active set as a whole must not pass less often than no learned
   rules do: once it has run ``GUARD_RUNS`` times since it last changed,
   and there are ``GUARD_BASE`` runs without learned rules (before the first
   adoption, and the sampler's outside share), a set whose pass rate is more
   than ``GUARD_DROP`` and two standard errors below theirs (posterior
   means, judged every ``GUARD_RUNS`` runs of the set) loses its most
   recently adopted rule (each rule can be right and their joint solution
   still narrow the inputs into a worse region: BroadcastTo's non-negative
   ``shape`` values took its pass rate from 53% to 33%).

Crashing and hanging runs count as passing ones for these checks (a rule
that excludes a crash input would steer the sampler away from a bug): a rule
must hold in every crash/timeout run seen so far, and one that a later crash
violates is rejected. They do not feed mining (not evidence of validity).
With ``known_crash_k`` (the campaign's known-crash k), a crash counts so
only while its signature has been seen fewer than k times: once it is known,
the filter deprioritises inputs that reproduce it, and a rule that steers
away from where it lies saves the worker restarts its repeats cost (the
sampler's outside share still draws there). A rule refused because it
excluded a crash input may then be proposed again.

Runs drawn without the learned rules (``outside``: the sampler's share of
candidates that checks the rules from the other side) reject a rule they
break by passing or crashing, as any run; they do not count in the failure
rates of probation, and an invalid one that breaks an active rule is
explained by that rule (it proposes nothing).

Everything depends only on the sequence of observed runs, so replaying the
recorded runs of a store rebuilds the same state (what ``--resume`` does).
A rejected rule is never proposed again.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from typing import Callable, Optional, Sequence

from ..model import AbstractInput, ApiSpec
from .evaluate import holds
from .mine import mine
from .patterns import candidates_from_message, message_key

#: a rule on probation is kept when what it targets fell to this share or less
LOWERED = 0.75
#: ... and the invalid rate did not rise by more than this
RAISED = 0.15
#: the whole-set guard (point 5 above)
GUARD_RUNS = 30
GUARD_BASE = 10
GUARD_DROP = 0.15
PROBATION = "probation"
EXCLUDES_CRASH = "excludes a crash input"
KEPT = "kept"
REJECTED = "rejected"


@dataclass
class LearnedRule:
    expr: str
    source: str                      # message:<family> | mined
    status: str = PROBATION
    adopted_at: Optional[int] = None  # executed runs seen when adopted
    decided_at: Optional[int] = None
    reason: Optional[str] = None
    key: Optional[str] = None         # the message it targets (message rules)
    pre_rate: Optional[float] = None  # rate of what it targets before adoption
    pre_invalid: Optional[float] = None  # invalid rate before adoption

    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


class RuleLearner:
    def __init__(self, spec: ApiSpec, check_sat: Callable[[Sequence[str]], Optional[str]], *,
                 window: int = 10, mine_every: int = 10, pre_window: int = 40,
                 offline: bool = False, max_active: int = 24,
                 sources: tuple = ("message", "mined"), prior: Sequence[str] = (),
                 known_crash_k: int = 0):
        """``check_sat(rules)`` returns None when ``rules`` compile and are
        satisfiable for the spec, else a short reason. ``offline``: the runs
        were not generated with the rules (learning from a finished store),
        so there is no probation: checked candidates are kept. ``sources``:
        where candidates come from (error messages, mined predicates).
        ``prior``: rules learned before (e.g. offline from another campaign
        of the API): each that compiles and keeps the constraints satisfiable
        starts ``kept`` (source ``prior``), so the first candidates are drawn
        with it; a passing run that breaks one rejects it, as any kept rule."""
        self.sources = tuple(sources)
        self.spec = spec
        self.check_sat = check_sat
        self.window = window
        self.mine_every = mine_every
        self.pre_window = pre_window
        self.offline = offline
        self.max_active = max_active
        self.rules: list[LearnedRule] = []
        self.passing: list[AbstractInput] = []
        self._mine_rows: dict = {}  # rows of the runs mined so far (mine.py)
        self.crash_runs: list[tuple[AbstractInput, str]] = []   # crash / timeout runs, signature
        self.known_crash_k = int(known_crash_k)
        self.crash_counts: Counter = Counter()   # runs per crash signature
        self.invalid: list[AbstractInput] = []
        self.invalid_keys: list[Optional[str]] = []
        self.history: list[tuple[str, Optional[str]]] = []   # (outcome, message key)
        self.outside: set[int] = set()   # history indices of runs drawn without the rules
        self.n = 0
        self._set_at = 0                 # history index at which the active set last changed
        self._set_runs = 0               # runs drawn with the rules since then
        self._first_at: Optional[int] = None   # history index of the first learned adoption
        for expr in prior:
            self._seed(expr)

    def _seed(self, expr: str) -> None:
        if expr in self._known() or len(self.active()) >= self.max_active:
            return
        rule = LearnedRule(expr, "prior", status=KEPT, adopted_at=0, decided_at=0,
                           reason="prior rule (learned before this campaign)")
        self.rules.append(rule)
        why = self.check_sat(self.active())
        if why is not None:
            self._reject(rule, why)

    # -- state ------------------------------------------------------------------
    def active(self) -> list[str]:
        return [r.expr for r in self.rules if r.status in (PROBATION, KEPT)]

    def _known(self) -> set[str]:
        return {r.expr for r in self.rules}

    def info(self) -> dict:
        return {"runs": self.n, "active": self.active(), "rules": [r.to_json() for r in self.rules]}

    # -- observing ----------------------------------------------------------------
    def observe(self, ai: AbstractInput, outcome: str, message: Optional[str],
                outside: bool = False, signature: Optional[str] = None) -> bool:
        """Record one executed run; True when the set of active rules changed.
        ``outside``: the run was drawn without the learned rules;
        ``signature``: a crash's signature (with ``known_crash_k``)."""
        self.n += 1
        key = message_key(message) if outcome == "invalid" else None
        if outside:
            self.outside.add(len(self.history))
        else:
            self._set_runs += 1
        self.history.append((outcome, key))
        changed = False
        if outcome == "pass":
            self.passing.append(ai)
            for r in self.rules:
                if r.status != REJECTED and not holds(r.expr, ai):
                    self._reject(r, f"violated by passing run {self.n}")
                    changed = True
        elif outcome in ("crash", "timeout") and self._guards(ai, signature or outcome):
            for r in self.rules:
                if r.status != REJECTED and not holds(r.expr, ai):
                    self._reject(r, f"violated by {outcome} run {self.n}")
                    changed = True
        elif outcome == "invalid":
            self.invalid.append(ai)
            self.invalid_keys.append(key)
        # offline, the runs were not drawn with the rules: a failing run that
        # breaks a rule kept already is explained by it (no conditioned copies)
        # (likewise a run drawn outside the rules)
        explained = (self.offline or outside) and outcome == "invalid" \
            and any(not holds(e, ai) for e in self.active())
        if outcome == "invalid" and "message" in self.sources and not explained:
            # the first new reading of the message that survives the checks
            # (as stated, else restricted to the failing run's attribute
            # values); the others wait for another failing run
            cands = candidates_from_message(self.spec, ai, message)
            if self.offline and not self.passing:
                # offline there is no probation: with no passing run to refute
                # it, a rule on a guessed argument (the message names none the
                # spec has) would be kept however wrong
                cands = [c for c in cands if c.strong]
            for conditioned in (False, True):
                if any(self._propose(c.expr, f"message:{c.family}", key=c.key, failing=ai,
                                     conditioned=conditioned) for c in cands):
                    changed = True
                    break
        if not self.offline:
            changed |= self._review()
            changed |= self._guard()
        if self.n % self.mine_every == 0 and "mined" in self.sources:
            changed |= self._mine()
        if changed:
            self._set_at, self._set_runs = len(self.history), 0
            if self._first_at is None and any(r.adopted_at for r in self.rules):
                self._first_at = len(self.history)
        return changed

    def _guard(self) -> bool:
        """Point 5: drop the newest active rule while the active set passes
        clearly less often than runs without learned rules."""
        # judged every GUARD_RUNS runs of the set (not after each run: fewer
        # looks, fewer false alarms), on a drop both large and clear
        if not self._set_runs or self._set_runs % GUARD_RUNS:
            return False
        live = [r for r in self.rules if r.status in (PROBATION, KEPT)]
        if not live:
            return False
        with_rules = [o for i, (o, _) in enumerate(self.history[self._set_at:], self._set_at)
                      if i not in self.outside]
        first = 0 if any(r.source == "prior" for r in live) else (self._first_at or 0)
        base = [o for i, (o, _) in enumerate(self.history) if i in self.outside or i < first]
        if len(base) < GUARD_BASE:
            return False
        p_rules = (sum(o == "pass" for o in with_rules) + 1) / (len(with_rules) + 2)
        p_base = (sum(o == "pass" for o in base) + 1) / (len(base) + 2)
        sd = (p_base * (1 - p_base) / len(base) + p_rules * (1 - p_rules) / len(with_rules)) ** 0.5
        if p_base - p_rules <= max(GUARD_DROP, 2.0 * sd):
            return False
        newest = max(live, key=lambda r: (r.adopted_at or 0, self.rules.index(r)))
        self._reject(newest, f"the rule set passed less often than no learned rules "
                             f"({p_base:.0%} -> {p_rules:.0%})")
        return True

    def _propose(self, expr: str, source: str, key: Optional[str] = None,
                 failing: Optional[AbstractInput] = None, conditioned: bool = False) -> bool:
        if len(self.active()) >= self.max_active:
            return False
        if conditioned:
            # true only in some settings? restrict it to an enum / bool
            # attribute value of the failing run
            return any(self._propose(c, source + "+condition", key=key)
                       for c in self._conditioned(expr, failing))
        blocked = [r for r in self.rules if r.expr == expr and r.reason == EXCLUDES_CRASH]
        if blocked:
            # refused for a crash input earlier: again once that crash's
            # signature is known (the same entry, not a new one)
            if not all(holds(expr, c) for c in self.crashing):
                return False
            rule = blocked[0]
            rule.status, rule.reason, rule.decided_at = PROBATION, None, None
        elif expr in self._known():
            return False
        else:
            rule = LearnedRule(expr, source, key=key)
            self.rules.append(rule)
        if not self._agrees(expr):
            self._reject(rule, "contradicts a passing run")
            return False
        if not all(holds(expr, c) for c in self.crashing):
            self._reject(rule, EXCLUDES_CRASH)
            return False
        why = self.check_sat(self.active())
        if why is not None:
            self._reject(rule, why)
            return False
        rule.adopted_at = self.n
        rule.pre_rate = self._rate(key, self.n - self.pre_window, self.n)
        rule.pre_invalid = self._rate(None, self.n - self.pre_window, self.n)
        if self.offline:
            rule.status, rule.decided_at = KEPT, self.n
            rule.reason = "offline: agrees with every passing run"
        return True

    def _guards(self, ai: AbstractInput, sig: str) -> bool:
        """Record a crash run; does it guard the rules (every one does
        without ``known_crash_k``; else one whose signature is not known)?"""
        self.crash_counts[sig] += 1
        self.crash_runs.append((ai, sig))
        return self._unknown(sig)

    def _unknown(self, sig: str) -> bool:
        return self.known_crash_k <= 0 or self.crash_counts[sig] < self.known_crash_k

    @property
    def crashing(self) -> list[AbstractInput]:
        """The crash runs that guard the rules now (their signature not known)."""
        return [ai for ai, sig in self.crash_runs if self._unknown(sig)]

    def _agrees(self, expr: str) -> bool:
        return all(holds(expr, p) for p in self.passing)

    def _conditioned(self, expr: str, failing: Optional[AbstractInput]) -> list[str]:
        """``expr`` restricted to the failing run's value of each string-enum
        or bool attribute: ``attr != 'v' or (expr)``; a length rule on a list
        that passing runs left empty: ``len(attr) == 0 or (expr)``."""
        if failing is None:
            return []
        out = []
        for a in self.spec.args:
            v = failing.args.get(a.name)
            if (isinstance(v, (list, tuple)) and v and f"len({a.name})" in expr
                    and any(isinstance(p.args.get(a.name), (list, tuple)) and not p.args.get(a.name)
                            for p in self.passing)):
                # an empty list passes (the attribute's default is taken): the
                # length a message states holds for the lists that are given
                out.append(f"len({a.name}) == 0 or ({expr})")
            if a.kind == "str" and a.allowed and isinstance(v, str):
                out.append(f"{a.name} != {v!r} or ({expr})")
            elif a.kind == "bool" and isinstance(v, bool):
                out.append(f"{'' if not v else 'not '}{a.name} or ({expr})")
        return out

    def _reject(self, rule: LearnedRule, reason: str) -> None:
        rule.status, rule.reason, rule.decided_at = REJECTED, reason, self.n

    def _rate(self, key: Optional[str], lo: int, hi: int) -> float:
        """Share of runs lo..hi-1 failing with ``key`` (any invalid when None)."""
        lo = max(lo, 0)
        h = [x for i, x in enumerate(self.history[lo:hi], lo) if i not in self.outside]
        if not h:
            return 0.0
        if key is None:
            return sum(1 for o, _ in h if o == "invalid") / len(h)
        return sum(1 for _, k in h if k == key) / len(h)

    def _review(self) -> bool:
        changed = False
        for r in self.rules:
            if r.status != PROBATION or r.adopted_at is None \
                    or self.n - r.adopted_at < self.window:
                continue
            post = self._rate(r.key, r.adopted_at, self.n)
            pre = r.pre_rate or 0.0
            lowered = post == 0 or post <= pre * LOWERED
            post_inv = self._rate(None, r.adopted_at, self.n)
            if lowered and r.pre_invalid is not None and post_inv > r.pre_invalid + RAISED:
                self._reject(r, f"raised the invalid rate ({r.pre_invalid:.0%} -> {post_inv:.0%})")
                changed = True
            elif lowered:
                r.status, r.decided_at = KEPT, self.n
                r.reason = f"lowered its failure rate {pre:.0%} -> {post:.0%}"
            else:
                self._reject(r, f"did not lower its failure rate ({pre:.0%} -> {post:.0%})")
                changed = True
        return changed

    def _mine(self) -> bool:
        # invalid runs the active rules do not already explain
        active = self.active()
        recent = [(ai, k) for ai, k in zip(self.invalid[-self.pre_window:], self.invalid_keys[-self.pre_window:])
                  if all(holds(e, ai) for e in active)]
        if len(recent) < 3:
            return False
        for expr, _ in mine(self.spec, self.passing, [ai for ai, _ in recent], exclude=self._known(),
                            cache=self._mine_rows)[:1]:
            # it targets the message most of the runs it excludes fail with
            keys = Counter(k for ai, k in recent if not holds(expr, ai))
            key = keys.most_common(1)[0][0] if keys else None
            return self._propose(expr, "mined", key=key)
        return False


def learn_offline(spec: ApiSpec, runs: Sequence[tuple[AbstractInput, str, Optional[str]]],
                  check_sat: Callable[[Sequence[str]], Optional[str]]) -> RuleLearner:
    """Learn from finished runs (``acetest-ml rules learn``): no probation."""
    lr = RuleLearner(spec, check_sat, offline=True)
    for ai, outcome, message in runs:
        lr.observe(ai, outcome, message)
    return lr
