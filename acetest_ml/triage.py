"""Bug folders: one self-contained folder per unique crash signature.

``<out>/bugs/<id>/`` where ``id`` = the API's safe name + a hash of
(API, signature):

- ``reproducer.py``   standalone script (numpy + the framework only)
- ``input.json``      the AbstractInput of the first run that hit the bug
- ``bug.json``        id, signature, api, framework, outcome, message,
                      stderr_tail, versions, spec, timeout, first_run
                      (seed, index), count, runs (every (seed, index) that
                      hit it), minimized (once ``minimize`` ran)
- ``minimized_input.json``, ``minimized_reproducer.py`` once minimised

Written as the campaign goes, every file atomically (temporary file +
rename), bug.json last; a folder without bug.json is incomplete and ignored.
A run already listed in ``runs`` is not counted again, so a campaign killed
between writing the folder and recording the run, then resumed, counts each
run once. Different APIs never share a folder, so parallel API processes do
not write the same files.

``replay`` and ``minimize`` (``acetest-ml replay|minimize FOLDER``) run the
folder's input again in a fresh worker; see ``replay_bug`` and ``minimize_bug``.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import tempfile
from dataclasses import replace
from typing import Any, Callable, Iterator

from .errors import UserError
from .model import AbstractInput, ApiSpec, TensorDesc, safe_name
from .outcome import Outcome

BUGS_DIR = "bugs"
BUG_FILE = "bug.json"
INPUT_FILE = "input.json"
REPRO_FILE = "reproducer.py"
MIN_INPUT_FILE = "minimized_input.json"
MIN_REPRO_FILE = "minimized_reproducer.py"
STDERR_TAIL = 8000  # what RunResult keeps: the start (fatal message) and the end
TIMEOUT_SIGNATURE = "timeout"


def bug_id(api: str, signature: str) -> str:
    h = hashlib.sha256(f"{api}\n{signature}".encode("utf-8")).hexdigest()[:12]
    return f"{safe_name(api)}-{h}"


def _write_atomic(path: str, text: str) -> None:
    d = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=d)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)  # atomic: a killed campaign leaves the old or the new file
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _versions(framework: str, framework_version: str | None) -> dict:
    import numpy as np
    from . import __version__
    return {"framework": framework, "framework_version": framework_version,
            "python": platform.python_version(), "numpy": np.__version__, "acetest_ml": __version__}


def signature_of(res) -> str:
    """The signature a run is filed under (timeouts have none of their own)."""
    return res.signature or (TIMEOUT_SIGNATURE if res.outcome == Outcome.TIMEOUT else str(res.outcome))


def record_bug(out_dir: str, spec: ApiSpec, ai: AbstractInput, res, *, seed: int, idx: int,
               framework_version: str | None = None, timeout: float | None = None) -> str:
    """File a crash / timeout run: create its bug folder or count it in the
    existing one. Returns the folder."""
    from .materialize import reproducer_script
    sig = signature_of(res)
    folder = os.path.join(out_dir, BUGS_DIR, bug_id(spec.name, sig))
    os.makedirs(folder, exist_ok=True)
    bug_path = os.path.join(folder, BUG_FILE)
    bug = _read_json(bug_path) if os.path.exists(bug_path) else None
    run = [int(seed), int(idx)]
    if bug is not None:
        if run in bug.get("runs", []):
            return folder  # already counted (a resumed campaign re-ran it)
        bug["runs"].append(run)
        bug["count"] = len(bug["runs"])
        _write_atomic(bug_path, json.dumps(bug, indent=1))
        return folder
    _write_atomic(os.path.join(folder, REPRO_FILE), reproducer_script(spec, ai))
    _write_atomic(os.path.join(folder, INPUT_FILE), json.dumps(ai.to_json(), indent=1))
    bug = {"id": os.path.basename(folder), "signature": sig, "api": spec.name,
           "framework": spec.framework, "outcome": res.outcome, "message": res.message,
           "stderr_tail": (res.stderr or "")[-STDERR_TAIL:],
           "versions": _versions(spec.framework, framework_version), "timeout": timeout,
           "first_run": {"seed": int(seed), "idx": int(idx)}, "count": 1, "runs": [run],
           "input": INPUT_FILE, "reproducer": REPRO_FILE, "minimized": None,
           "spec": spec.to_dict()}
    _write_atomic(bug_path, json.dumps(bug, indent=1))
    return folder


# --------------------------------------------------------------------------
# reading bug folders

def _read_json(path: str) -> Any:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise UserError(f"{path} not found") from None
    except (OSError, ValueError) as e:
        raise UserError(f"{path} is not readable JSON: {e}") from None


def load_bug(folder: str) -> tuple[dict, ApiSpec, AbstractInput]:
    """bug.json, the spec and the input of a bug folder (UserError when the
    folder is not one)."""
    if not os.path.isdir(folder):
        raise UserError(f"{folder} is not a bug folder (not a directory)")
    bug = _read_json(os.path.join(folder, BUG_FILE))
    try:
        spec = ApiSpec.from_dict(bug["spec"])
        ai = AbstractInput.from_json(_read_json(os.path.join(folder, bug.get("input") or INPUT_FILE)))
        missing = [k for k in ("signature", "outcome") if not isinstance(bug.get(k), str)]
        if missing:
            raise KeyError(", ".join(missing))
    except UserError:
        raise
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{folder}/{BUG_FILE} is not a valid bug record: {e!r}") from None
    if ai.api != spec.name:
        raise UserError(f"{folder}: input is for {ai.api}, bug is for {spec.name}")
    return bug, spec, ai


def list_bugs(campaign_dir: str) -> list[dict]:
    """Every complete bug folder of a campaign (or of a bugs/ folder), most
    frequent first: dicts with signature, api, count, outcome, folder, id."""
    if not os.path.isdir(campaign_dir):
        raise UserError(f"{campaign_dir} is not a directory")
    root = os.path.join(campaign_dir, BUGS_DIR)
    if not os.path.isdir(root):
        if os.path.exists(os.path.join(campaign_dir, "runs.sqlite")):
            return []  # a campaign without crashes
        if any(os.path.exists(os.path.join(campaign_dir, d, BUG_FILE))
               for d in os.listdir(campaign_dir)):
            root = campaign_dir
        else:
            raise UserError(f"{campaign_dir} is not a campaign folder (no runs.sqlite, no bugs/)")
    out = []
    for name in sorted(os.listdir(root)):
        path = os.path.join(root, name, BUG_FILE)
        if not os.path.exists(path):
            continue  # incomplete (killed while it was first written)
        bug = _read_json(path)
        out.append({"id": bug.get("id", name), "signature": bug.get("signature"),
                    "api": bug.get("api"), "count": bug.get("count", 0),
                    "outcome": bug.get("outcome"), "folder": os.path.join(root, name),
                    "first_run": bug.get("first_run"),
                    "minimized": bool(bug.get("minimized"))})
    out.sort(key=lambda b: (-int(b["count"] or 0), b["api"] or "", b["signature"] or ""))
    return out


def format_bugs(bugs: list[dict]) -> str:
    if not bugs:
        return "no crashes recorded"
    rows = [("count", "API", "signature", "folder")]
    for b in bugs:
        sig = b["signature"] or ""
        rows.append((str(b["count"]), b["api"], sig if len(sig) <= 100 else sig[:97] + "...",
                     b["folder"]))
    w = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [f"{r[0]:>{w[0]}}  {r[1]:<{w[1]}}  {r[2]:<{w[2]}}  {r[3]}" for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines) + f"\n{len(bugs)} unique signature(s)"


# --------------------------------------------------------------------------
# replay

def _executor(spec: ApiSpec, bug: dict, warm_spare: bool):
    from .execute.supervisor import Executor
    return Executor(spec.framework, timeout=float(bug.get("timeout") or 10.0),
                    warm_spare=warm_spare)


def _same_bug(bug: dict, res) -> bool:
    return res.outcome == bug["outcome"] and signature_of(res) == bug["signature"]


def replay_bug(folder: str, *, minimized: bool = False) -> tuple[bool, Any]:
    """Run the folder's input (or its minimised input) once in a fresh,
    isolated worker. -> (same signature reproduced?, RunResult)."""
    from .execute.supervisor import RunResult
    from .materialize import CapExceeded
    bug, spec, ai = load_bug(folder)
    if minimized:
        if not bug.get("minimized"):
            raise UserError(f"{folder} has no minimised input yet (run acetest-ml minimize)")
        ai = AbstractInput.from_json(_read_json(os.path.join(folder, MIN_INPUT_FILE)))
    with _executor(spec, bug, warm_spare=False) as ex:
        try:
            res = ex.run(spec, ai)
        except CapExceeded as e:
            res = RunResult(outcome=Outcome.SKIPPED, message=str(e))
    return _same_bug(bug, res), res


# --------------------------------------------------------------------------
# minimisation

def _shrunk_tensor(t: TensorDesc, shape: tuple) -> TensorDesc:
    n = 1
    for d in shape:
        n *= int(d)
    values = None if t.values is None else tuple(t.values)[:n]
    if values is not None and len(values) < n:
        return t  # cannot fill: keep the original
    return replace(t, shape=tuple(int(d) for d in shape), values=values)


def _tensor_candidates(t: TensorDesc) -> Iterator[TensorDesc]:
    shape = tuple(t.shape)
    for i in range(len(shape)):  # lower rank: drop one axis
        yield _shrunk_tensor(t, shape[:i] + shape[i + 1:])
    for i, d in enumerate(shape):  # smaller dimensions
        for smaller in sorted({1, d // 2, d - 1} - {d}):
            if 0 < smaller < d:
                yield _shrunk_tensor(t, shape[:i] + (smaller,) + shape[i + 1:])


def _scalar_candidates(v: Any, default: Any, has_default: bool) -> Iterator[Any]:
    if isinstance(v, bool):
        if has_default and isinstance(default, bool) and default != v:
            yield default
        return
    if isinstance(v, (int, float)):
        options = [0, 1, -1, v / 2 if isinstance(v, float) else int(v / 2)]
        if has_default and isinstance(default, (int, float)) and not isinstance(default, bool):
            options.insert(0, default)
        seen = set()
        for c in options:
            c = type(v)(c)
            if abs(c) < abs(v) and c not in seen:
                seen.add(c)
                yield c
    elif isinstance(v, str) and has_default and isinstance(default, str) and default != v:
        yield default


def _list_candidates(items: list) -> Iterator[list]:
    """Delta-debugging removal: halves, quarters... down to single items."""
    n = len(items)
    chunk = n // 2 if n > 1 else 1
    while chunk >= 1 and n:
        for start in range(0, n, chunk):
            cand = items[:start] + items[start + chunk:]
            if len(cand) < n:
                yield cand
        if chunk == 1:
            break
        chunk //= 2


def _candidates(spec: ApiSpec, ai: AbstractInput) -> Iterator[AbstractInput]:
    """Smaller variants of ``ai``, one change each, biggest reductions first."""
    def with_arg(name, value):
        return replace(ai, args={**ai.args, name: value})

    for name, v in ai.args.items():
        if isinstance(v, list) and v:
            for cand in _list_candidates(v):
                yield with_arg(name, cand)
    for name, v in ai.args.items():
        if isinstance(v, TensorDesc):
            for t in _tensor_candidates(v):
                yield with_arg(name, t)
        elif isinstance(v, list):
            for i, item in enumerate(v):
                if isinstance(item, TensorDesc):
                    for t in _tensor_candidates(item):
                        yield with_arg(name, v[:i] + [t] + v[i + 1:])
    for name, v in ai.args.items():
        a = spec.arg(name) if spec.has_arg(name) else None
        default, has_default = (a.default, a.has_default) if a is not None else (None, False)
        if isinstance(v, list):
            for i, item in enumerate(v):
                if not isinstance(item, (TensorDesc, list, dict)):
                    for c in _scalar_candidates(item, None, False):
                        yield with_arg(name, v[:i] + [c] + v[i + 1:])
        elif not isinstance(v, (TensorDesc, dict)):
            for c in _scalar_candidates(v, default, has_default):
                yield with_arg(name, c)


def minimize_input(spec: ApiSpec, ai: AbstractInput, holds: Callable[[AbstractInput], bool],
                   max_runs: int = 150) -> tuple[AbstractInput, int]:
    """Greedy delta debugging: take the first smaller variant for which
    ``holds`` (the bug still reproduces), start again from it; stop at a
    fixed point or after ``max_runs`` calls of ``holds``. -> (input, runs)."""
    runs = 0
    tried: set[str] = {ai.key()}
    current = ai
    progress = True
    while progress and runs < max_runs:
        progress = False
        for cand in _candidates(spec, current):
            k = cand.key()
            if k in tried:
                continue
            tried.add(k)
            runs += 1
            if holds(cand):
                current, progress = cand, True
                break
            if runs >= max_runs:
                break
    return current, runs


def minimize_bug(folder: str, max_runs: int = 150,
                 progress: Callable[[int, int], None] | None = None) -> dict:
    """Minimise a bug folder's input while its signature holds; writes
    minimized_input.json and minimized_reproducer.py and records the result
    in bug.json. -> the ``minimized`` record."""
    from .execute.supervisor import RunResult
    from .materialize import CapExceeded, reproducer_script
    bug, spec, ai = load_bug(folder)
    with _executor(spec, bug, warm_spare=True) as ex:
        first = ex.run(spec, ai)
        if not _same_bug(bug, first):
            raise UserError(f"{folder}: the bug does not reproduce (got {first.outcome}"
                            f"{': ' + signature_of(first) if Outcome(first.outcome).failure else ''})"
                            f"; nothing to minimise")
        count = [0]

        def holds(cand: AbstractInput) -> bool:
            count[0] += 1
            if progress:
                progress(count[0], max_runs)
            try:
                res = ex.run(spec, cand)
            except CapExceeded as e:
                res = RunResult(outcome=Outcome.SKIPPED, message=str(e))
            except UserError:
                return False  # the variant does not fit the spec
            return _same_bug(bug, res)

        small, runs = minimize_input(spec, ai, holds, max_runs)
    _write_atomic(os.path.join(folder, MIN_INPUT_FILE), json.dumps(small.to_json(), indent=1))
    _write_atomic(os.path.join(folder, MIN_REPRO_FILE), reproducer_script(spec, small))
    record = {"input": MIN_INPUT_FILE, "reproducer": MIN_REPRO_FILE, "runs": runs + 1,
              "max_runs": max_runs, "signature": bug["signature"],
              "elements_before": sum(t.numel for t in ai.tensors().values()),
              "elements_after": sum(t.numel for t in small.tensors().values())}
    bug["minimized"] = record
    _write_atomic(os.path.join(folder, BUG_FILE), json.dumps(bug, indent=1))
    return record
