"""The vocabulary of a run: its outcome, the stage it reached, the filter's
decision and an API's campaign status.

The enums are ``str``-valued, so a member equals (and is stored in SQLite and
JSON as) its plain string: ``Outcome.PASS == "pass"``. Stored data written
before the enums existed reads back unchanged.
"""
from __future__ import annotations

from enum import Enum


class _StrEnum(str, Enum):
    def __str__(self) -> str:  # f-strings and str() give the plain value
        return str(self.value)


class Outcome(_StrEnum):
    """The label of one candidate that was sent to the executor."""

    PASS = "pass"            #: the API accepted the input and returned
    INVALID = "invalid"      #: the API raised (rejected the input)
    CRASH = "crash"          #: the worker process died
    TIMEOUT = "timeout"      #: no reply within the deadline; worker killed
    SKIPPED = "skipped"      #: never reached the API (size caps, input we cannot build)
    #: our own code failed while building the call (a bug of ours, not the API's verdict)
    INTERNAL = "internal"

    @property
    def executed(self) -> bool:
        """The API ran and gave a verdict (counts against the budget)."""
        return self in EXECUTED

    @property
    def failure(self) -> bool:
        """A finding: worth a reproducer."""
        return self in FAILURES


#: outcomes of inputs that reached the API (the budget counts these)
EXECUTED: tuple[Outcome, ...] = (Outcome.PASS, Outcome.INVALID, Outcome.CRASH, Outcome.TIMEOUT)
#: outcomes that are findings (a reproducer is saved)
FAILURES: tuple[Outcome, ...] = (Outcome.CRASH, Outcome.TIMEOUT)
#: every outcome, in report order
ALL: tuple[Outcome, ...] = tuple(Outcome)


class Stage(_StrEnum):
    """How far a run got in the worker before it ended."""

    MATERIALIZE = "materialize"   #: building the arguments (our conversion code)
    CALL = "call"                 #: inside the API call


class Decision(_StrEnum):
    """What the campaign did with a candidate (the store's ``decision``)."""

    NONE = "none"          #: no filter: executed
    WARMUP = "warmup"      #: filter not trained yet: executed
    ACCEPT = "accept"      #: predicted valid: executed
    REJECT = "reject"      #: predicted invalid (becomes EXPLORE or DISCARD; never stored)
    EXPLORE = "explore"    #: predicted invalid, executed anyway (measures the filter's misses)
    DISCARD = "discard"    #: predicted invalid, not executed
    #: predicted invalid, executed because at the API's measured valid rate
    #: and invalid-run time its score is worth the run (filter policy ``rate``)
    CHEAP = "cheap"
    #: predicted invalid, executed because on this API the filter shows no
    #: lift: its rejected inputs pass about as often as its accepted ones
    BYPASS = "bypass"
    #: predicted to crash or hang: never discarded (becomes ACCEPT or KNOWN; never stored)
    CRASH = "crash"
    #: predicted to reproduce a crash signature already seen known_crash_k times: not executed
    KNOWN = "known"


class ApiStatus(_StrEnum):
    """The state of one API in a campaign (the store's ``api_status``)."""

    RUNNING = "running"
    DONE = "done"            #: reached its budget
    SKIPPED = "skipped"      #: could not run (unsupported, no constraint set, unknown)
    #: stopped before its budget for a reason that makes its figures weak
    #: (e.g. the candidate cap: the filter or the generator rejects nearly everything)
    UNHEALTHY = "unhealthy"
    #: our own code failed on it (recorded with the exception; the campaign goes on)
    ERROR = "error"


def sql_list(outcomes) -> str:
    """``('pass','invalid',...)`` for an SQL ``IN`` clause (values are ours, not user text)."""
    return "(" + ",".join(f"'{o.value}'" for o in outcomes) + ")"
