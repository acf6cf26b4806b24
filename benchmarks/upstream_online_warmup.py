"""The hook's online arm at another warm-up than the upstream scope's (40), on
chosen APIs, same seed (2) and rounds (300) as the scope's arm.

    python benchmarks/upstream_online_warmup.py --home ACETEST_HOME --warmup 10 --out DIR API ...

Writes DIR/<api>.json (the scope's arm row) and prints one line per API."""
from __future__ import annotations

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))


def main() -> int:
    from acetest_ml.bench import upstream as scope
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--home", required=True, help="upstream checkout (shijy16/ACETest)")
    p.add_argument("--acetest-data", default=os.path.join(HERE, "..", "..", "shared", "acetest-data"))
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--rounds", type=int, default=300)
    p.add_argument("--seed", type=int, default=2)
    p.add_argument("--round-timeout", type=int, default=20)
    p.add_argument("--out", required=True)
    p.add_argument("--no-repair", dest="repair", action="store_false",
                   help="the hook draws a rule breaker again instead of repairing it")
    p.add_argument("apis", nargs="+")
    a = p.parse_args()
    from acetest_ml.errors import UserError
    try:
        home = scope.find_checkout(a.home)
        if home is None:
            raise UserError(f"--home {a.home}: not an ACETest checkout (no Tester/src)")
        if a.rounds < 1 or a.warmup < 0:
            raise UserError(f"--rounds must be at least 1 and --warmup at least 0, got {a.rounds} and {a.warmup}")
        data = scope.data_root(home, a.acetest_data)
        if os.path.isfile(a.out):
            raise UserError(f"--out {a.out} is a file")
        for api in a.apis:
            if scope.op_of(data, api) is None:
                raise UserError(f"{api}: not in {os.path.join(data, 'API2OP.csv')}")
    except UserError as e:
        print(f"upstream_online_warmup: {e}", file=sys.stderr)
        return 2
    os.makedirs(a.out, exist_ok=True)
    for api in a.apis:
        row = scope.run_upstream_arm("up-online", api, home, data, a.rounds, a.seed, os.path.join(a.out, api),
                                     models=None, warmup=a.warmup, round_timeout=a.round_timeout,
                                     repair=a.repair)
        with open(os.path.join(a.out, f"{api}.json"), "w") as f:
            json.dump(row, f, indent=1)
        print(api, scope._short(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
