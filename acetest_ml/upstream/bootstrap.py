"""Run upstream ACETest's ``Tester/src/main.py`` unmodified, with the filter
hook installed first. Started by :func:`acetest_ml.upstream.runner.run_upstream`
in a subprocess::

    python -m acetest_ml.upstream.bootstrap --home DIR [--filter models|online|none]
        [--models YAML] [--exploration X] [--max-tries N] [--warmup N] [--seed N]
        [--collect DIR] [--reallocate 0|1] [--probes N] [--repair 0|1] -- <upstream main.py options>

Upstream runs in its own ``Tester/src`` as working directory with its own
``sys.argv``, so its option parsing, relative data paths and output folders
are the ones it expects. ``--seed`` seeds Python's and NumPy's global random
generators, which are all the randomness upstream uses (``PYTHONHASHSEED`` must
be set by the caller, before this interpreter starts). Installing and seeding
is :func:`acetest_ml.upstream.activate.activate`, the same code the
``patches/`` start-up loader runs for upstream's own ``python main.py``.
"""
from __future__ import annotations

import argparse
import os
import runpy
import sys
import traceback

from ..errors import UserError
from .activate import HookSettings, activate


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    if "--" in argv:
        i = argv.index("--")
        ours, upstream = argv[:i], argv[i + 1:]
    else:
        ours, upstream = argv, []
    p = argparse.ArgumentParser(prog="python -m acetest_ml.upstream.bootstrap")
    p.add_argument("--home", required=True, help="ACETest checkout (holds Tester/src/main.py)")
    p.add_argument("--filter", choices=("none", "models", "online"), default="none")
    p.add_argument("--models", default=None)
    p.add_argument("--exploration", type=float, default=0.05)
    p.add_argument("--max-tries", type=int, default=100)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--collect", default=None)
    p.add_argument("--reallocate", type=int, choices=(0, 1), default=1)
    p.add_argument("--probes", type=int, default=8)
    p.add_argument("--repair", type=int, choices=(0, 1), default=1)
    return p.parse_args(ours), upstream


def settings_from_namespace(ns: argparse.Namespace) -> HookSettings:
    return HookSettings(filter=ns.filter, models=ns.models, exploration=ns.exploration,
                        max_tries=ns.max_tries, warmup=ns.warmup, seed=ns.seed,
                        collect=os.path.abspath(ns.collect) if ns.collect else None,
                        reallocate=bool(ns.reallocate), probes=ns.probes, repair=bool(ns.repair))


def _exit_code(code) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    ns, upstream_args = parse_args(list(sys.argv[1:] if argv is None else argv))
    src = os.path.join(os.path.abspath(ns.home), "Tester", "src")
    main_py = os.path.join(src, "main.py")
    if not os.path.isfile(main_py):
        print(f"error: ACETest main.py not found at {main_py}", file=sys.stderr)
        return 2
    settings = settings_from_namespace(ns)  # relative paths: from the caller's folder
    sys.path.insert(0, src)
    os.chdir(src)
    try:
        activate(settings)
        sys.argv = [main_py] + upstream_args
        runpy.run_path(main_py, run_name="__main__")
    except SystemExit as e:
        return _exit_code(e.code)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as e:
        traceback.print_exc()
        print(f"error: upstream ACETest needs the module {e.name!r}: install upstream's requirements "
              "(z3-solver, sysv_ipc, termcolor)", file=sys.stderr)
        return 1
    except Exception:
        traceback.print_exc()
        print("error: upstream ACETest failed (traceback above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
