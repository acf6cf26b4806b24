"""A sampler that learns: draws candidates from the API's constraint sets
conjoined with the rules learned so far, and re-solves whenever the learner
changes its active rules.

Each change starts a new *rule set* (epoch ``k``): a fresh ``Sampler`` over
the same problems plus the active rules, seeded from (API seed, k). With
registry constraints the rules are compiled into the Z3 problem; ACETest's
constraint sets fill much of an input at random after solving, so there the
rules are enforced on the decoded input (a draw that breaks one is redrawn).
Every input records its rule set in ``origin["rules"]``.

Once rules are active, a share of the candidates (``OUTSIDE_SHARE``) is
drawn without the learned rules (``origin["rules"] == "outside"``): a wrong
rule that excludes passing or crashing inputs is then still met by a run
that breaks it and is rejected, so no region of the input space (and no
crash in it) stays closed for good. Those runs do not count in the
learner's failure rates.

The candidate stream is deterministic given the recorded runs: ``replay``
redraws the recorded candidates and feeds the learner the recorded
outcomes, which rebuilds the same epochs (``--resume``). Each candidate
carries its place in the stream (``origin["pos"]``), so the draws a campaign
dropped unrecorded (the rest of a batch after a rule change) are drawn
again at the same point of the replay.

Drawing ahead (``prefetch``): a rule set's own draws do not depend on the
runs observed while it is active (only a change of the active rules does,
and a change starts a new Sampler), so the campaign's generator process
draws the current set's next candidates while the last one executes, and
``next`` takes them from that queue in order; the stream is the same as
drawn on demand. The queue belongs to the Sampler it was drawn from and
goes with it. Draw-ahead touches only that Sampler's Z3 contexts: samplers
made later (the outside stream, a rule set back to no learned rules) get
problems of their own, copied from a problem no solver uses, so how far
ahead a set was drawn leaves no trace in them.
"""
from __future__ import annotations

import collections
import functools
import random
from typing import Callable, Iterable, Optional, Sequence

import z3

from ..model import AbstractInput, ApiSpec
from ..solve.registry import RegistryProblem
from ..solve.rules import RuleError, compile_rule
from ..solve.sampler import WARM_MODELS, NoSolutionError, Sampler
from .evaluate import holds
from .learner import RuleLearner
from .repair import repair_all

#: redraws before a rule set counts as unreachable for a draw (enforced rules)
MAX_REDRAWS = 64
#: share of candidates drawn without the learned rules once some are active
OUTSIDE_SHARE = 1 / 16
SAT_TIMEOUT_MS = 5000
#: Z3 models a learned rule set pools before mutating them (the first set:
#: the Sampler's default); a set's warm-up is most of the cost of a rule
#: change on fast APIs, and its Z3 draws (one in Z3_EVERY) keep coming
EPOCH_WARM_MODELS = 2


def registry_check(spec: ApiSpec, base_rules: Sequence[str] = ()) -> Callable[[Sequence[str]], Optional[str]]:
    """``check_sat`` for the learner: None when ``base_rules + rules`` compile
    against ``spec`` and have a solution, else the reason."""

    # one problem and solver for every check: the rules of a check are
    # compiled against it and asserted in a push / pop scope (building the
    # problem anew for each proposal cost ~0.1 s)
    base: dict = {}

    def _base():
        if "problem" not in base:
            p = RegistryProblem(spec, list(base_rules), rules_source="learned")
            s = z3.Solver(ctx=p.ctx)
            s.set("timeout", SAT_TIMEOUT_MS)
            s.add(*p.formulas())
            base.update(problem=p, solver=s, n=len(p.formulas()))
        return base["problem"], base["solver"], base["n"]

    @functools.lru_cache(maxsize=256)
    def check(rules: tuple) -> Optional[str]:
        try:
            p, s, n = _base()
            fs = [compile_rule(r, p, where=f"learned: {spec.name}[{i}]") for i, r in enumerate(rules)]
        except RuleError as e:
            return f"does not compile ({str(e).split(': ')[-1][:80]})"
        except Exception as e:  # a spec the registry encoder cannot take
            return f"cannot encode ({type(e).__name__})"
        s.push()
        try:
            # bounds of element variables the rules' compilation added
            s.add(*p.formulas()[n:], *fs)
            r = s.check()
        finally:
            s.pop()
        if r == z3.sat:
            return None
        return "makes the constraints unsatisfiable" if r == z3.unsat else "solver gave up"

    return lambda rules: check(tuple(rules))


class LearningSampler:
    def __init__(self, spec: ApiSpec, problems: Sequence, seed: int, *, source: str = "registry",
                 base_rules: Sequence[str] = (), models_per_set: Optional[int] = None,
                 on_change: Optional[Callable[[dict], None]] = None, window: int = 10,
                 cheap: bool = True, prior: Sequence[str] = (),
                 outside_share: float = OUTSIDE_SHARE, known_crash_k: int = 0):
        if not 0.0 <= outside_share < 1.0:
            raise ValueError(f"outside_share must be in [0, 1), got {outside_share}")
        self.spec = spec
        self.problems = list(problems)
        self.seed = seed
        self.source = source
        self.base_rules = list(base_rules)
        self.models_per_set = models_per_set
        self.on_change = on_change
        self.cheap = cheap
        self.learner = RuleLearner(spec, registry_check(spec, base_rules if source == "registry" else ()),
                                   window=window, prior=prior, known_crash_k=known_crash_k)
        self.epoch = 0
        self.epochs: list[dict] = []
        self.drawn = 0
        self.outside_share = outside_share
        self.outside_drawn = 0
        self._outside_rng = random.Random((seed * 7919 + 17) % (2 ** 31))
        self._outside_sampler: Optional[Sampler] = None
        #: the current Sampler's draws made ahead (AbstractInput, or the
        #: NoSolutionError that stopped it), taken in order by ``_draw``
        self._ahead: collections.deque = collections.deque()
        self._outside_ahead: collections.deque = collections.deque()
        self._outside_dry = False  # the outside stream has no solution left
        self._base_problem: Optional[RegistryProblem] = None
        self._build()

    # -- rule sets --------------------------------------------------------------
    def _build(self) -> None:
        rules = self.learner.active()
        self.enforced = list(rules) if self.source != "registry" else []
        if self.source == "registry" and (rules or self.epoch > 0):
            problems = [self._template().with_rules(rules, rules_source="learned")]
        else:
            problems = self.problems
        seed = self.seed if self.epoch == 0 else (self.seed * 1000003 + self.epoch) % (2 ** 31)
        if self.source == "registry" or self.epoch == 0:
            # registry: a new Sampler per rule set, its Z3 problem and checker
            # compiled with the learned rules
            self.sampler = Sampler(problems, seed, models_per_set=self.models_per_set, cheap=self.cheap,
                                   warm_models=WARM_MODELS if self.epoch == 0 else EPOCH_WARM_MODELS)
            self._ahead.clear()
        # (enforced rules leave the problems as they are: the sampler and the
        # models it solved so far are kept, instead of solving them again)
        # enforced rules: a draw that breaks one is first edited to meet them (repair.py)
        self.repair_rng = random.Random(seed ^ 0x5A17)
        self.set_id = "base" if not rules else f"learned@{self.epoch}"
        self.epochs.append({"epoch": self.epoch, "from_run": self.learner.n, "rules": list(rules)})

    def _new_epoch(self) -> None:
        self.epoch += 1
        self._build()
        if self.on_change is not None:
            self.on_change(self.info())

    # -- drawing ----------------------------------------------------------------
    def next(self) -> AbstractInput:
        # one draw of the outside stream per candidate, whatever the rule set
        # (keeps the stream a function of the number of candidates drawn)
        pos = self.drawn
        outside = self._outside_rng.random() < self.outside_share
        if outside and self.learner.active():
            ai = self._draw_outside()
            if ai is not None:
                ai.origin["rules"] = "outside"
                ai.origin["pos"] = pos
                self.drawn += 1
                self.outside_drawn += 1
                return ai
        while True:
            try:
                ai = self._draw()
            except NoSolutionError:
                if not self._drop_newest("no solution with this rule set"):
                    raise
                continue
            tries = 1
            while self.enforced and not all(holds(r, ai) for r in self.enforced) and tries < MAX_REDRAWS:
                fixed = repair_all(self.enforced, ai, self.repair_rng)
                if fixed is not None:
                    fixed.origin["repaired"] = True
                    ai = fixed
                    break
                ai = self._draw()
                tries += 1
            if self.enforced and not all(holds(r, ai) for r in self.enforced):
                if self._drop_newest(f"no input in {MAX_REDRAWS} draws satisfies it"):
                    continue
            break
        ai.origin["rules"] = self.set_id
        ai.origin["pos"] = pos  # its place in the stream (replay of dropped draws)
        self.drawn += 1
        return ai

    def _draw_outside(self) -> Optional[AbstractInput]:
        """A candidate from the API's own constraint sets, without learned rules."""
        if self.source != "registry":
            # ACETest sets: the rules are only enforced on the decoded draw
            return self._draw()
        if self._outside_sampler is None:
            # problems of its own (see the module docstring: draw-ahead)
            own = [self._template().with_rules([], rules_source="learned")]
            self._outside_sampler = Sampler(own, (self.seed * 7919 + 17) % (2 ** 31),
                                            models_per_set=self.models_per_set, cheap=self.cheap)
        if self._outside_ahead:
            return self._outside_ahead.popleft()
        try:
            return self._outside_sampler.next()
        except NoSolutionError:
            return None

    def _template(self) -> RegistryProblem:
        """The API's problem with its base rules, never solved: each later
        rule set's problem is a copy of it (``with_rules``)."""
        if self._base_problem is None:
            self._base_problem = RegistryProblem(self.spec, self.base_rules, rules_source="learned")
        return self._base_problem

    def _draw(self) -> AbstractInput:
        """The current Sampler's next draw (from the queue drawn ahead, if any)."""
        if self._ahead:
            x = self._ahead.popleft()
            if isinstance(x, NoSolutionError):
                raise x
            return x
        return self.sampler.next()

    def prefetch(self, depth: int) -> bool:
        """Draw one more of the current Sampler's candidates ahead, unless
        ``depth`` are queued already (or the queue ends in a failure); True
        when one was drawn."""
        ended = bool(self._ahead) and isinstance(self._ahead[-1], NoSolutionError)
        if len(self._ahead) < depth and not ended:
            try:
                self._ahead.append(self.sampler.next())
            except NoSolutionError as e:
                self._ahead.append(e)
            return True
        # then the outside stream (its own Sampler, the same whatever the
        # rule set): one draw ahead once it is in use
        if self._outside_sampler is None or self._outside_ahead or self._outside_dry:
            return False
        try:
            self._outside_ahead.append(self._outside_sampler.next())
        except NoSolutionError:
            self._outside_dry = True
        return True

    def _drop_newest(self, reason: str) -> bool:
        """An unreachable rule set: reject the most recently adopted rule."""
        live = [r for r in self.learner.rules if r.status in ("probation", "kept")]
        if not live:
            return False
        self.learner._reject(live[-1], reason)
        self._new_epoch()
        return True

    def observe(self, ai: AbstractInput, outcome: str, message: Optional[str],
                signature: Optional[str] = None) -> bool:
        """Feed one executed run; True when the rule set changed (the caller
        drops the rest of a batch drawn from the old one)."""
        if self.learner.observe(ai, outcome, message, outside=ai.origin.get("rules") == "outside",
                                signature=signature):
            self._new_epoch()
            return True
        return False

    def replay(self, records: Iterable, lag: bool = False) -> Optional[tuple]:
        """Redraw the recorded candidates and feed their outcomes (resume).

        ``lag``: the campaign ran one run behind (see ``LAG`` in generate.py:
        each candidate was handed out before the run before it was fed to
        the learner); the last executed run is then not fed yet, and is
        returned as ``(input, outcome, message, signature)`` to be fed after
        the next candidate is drawn."""
        from ..outcome import EXECUTED as EXECUTED_OUTCOMES
        recs = list(records)
        pending: Optional[tuple] = None
        for k, rec in enumerate(recs):
            self._skip_to(rec.input.origin.get("pos"))
            self.next()
            if lag:
                if pending is not None:
                    self.feed(pending)
                pending = ((rec.input, rec.outcome, rec.message, getattr(rec, "signature", None))
                           if rec.outcome in EXECUTED_OUTCOMES else None)
                continue
            # a gap before the next record: the campaign drew a batch and
            # dropped its rest when this run changed the rule set, so those
            # draws came before this run was observed
            if k + 1 < len(recs):
                self._skip_to(recs[k + 1].input.origin.get("pos"))
            if rec.outcome in EXECUTED_OUTCOMES:
                self.observe(rec.input, rec.outcome, rec.message, signature=getattr(rec, "signature", None))
        return pending

    def feed(self, run: tuple) -> bool:
        """``observe`` of a run held back one candidate: ``(input, outcome,
        message, signature)`` as ``replay(lag=True)`` returns it."""
        ai, outcome, message, signature = run
        return self.observe(ai, outcome, message, signature=signature)

    def _skip_to(self, pos) -> None:
        if isinstance(pos, int):
            while self.drawn < pos:
                self.next()

    def info(self) -> dict:
        d = self.learner.info()
        d["epochs"] = [dict(e) for e in self.epochs]
        d["source"] = self.source
        d["outside_drawn"] = self.outside_drawn
        return d
