"""ACETest mode after the split of solve/acetest.py into smt2 / z3walk /
acetest_problem / fill: the same seed still gives the same inputs, the filler
tables cover every kind, and the old import path still works."""
import os
import subprocess
import sys
import textwrap


from acetest_ml.model import ARG_KINDS, DTYPE, LIST_KINDS

from helpers import ACETEST_DATA, ROOT, needs_acetest_data


# sha256 (first 16 hex digits) of the first 30 candidates of seed 5 per API,
# recorded with the single-module solve/acetest.py before the split (our
# generation with --acetest-extensions since the faithful default). Together
# these APIs have every argument kind the filler draws except str_list,
# bool_list and scalar. A change here means generation changed: if on
# purpose, record the new digests and say so in the commit.
GOLDEN = {
    "tf.raw_ops.Conv2D": "7f4d54bb73802395",        # tensor, int_list, str, bool, dtype
    "tf.raw_ops.StridedSlice": "ebaa37799c64924c",  # int masks, four constraint sets
    "tf.raw_ops.DecodeCSV": "22b72baefe749d92",     # tensor_list, dtype_list
    "tf.raw_ops.AddN": "7888c699f0c01241",          # number attr -> list length
    "tf.raw_ops.LeakyRelu": "1b0d5c365686fed2",     # float
    "tf.raw_ops.EnsureShape": "faeb486839bb4102",   # shape
    "tf.raw_ops.Bucketize": "e8304740e4a94b0f",     # float_list
}

SCRIPT = textwrap.dedent("""
    import hashlib, sys
    from acetest_ml.settings import CampaignConfig
    from acetest_ml.campaign import resolve
    from acetest_ml.solve.sampler import Sampler
    for api in sys.argv[2:]:
        cfg = CampaignConfig(apis=[api], out="unused", constraints="acetest", acetest_data=sys.argv[1],
                             acetest_extensions=True)
        _, problems, _ = resolve(cfg, api)
        xs = Sampler(problems, seed=5).take(30)
        print(api, hashlib.sha256("".join(x.dumps() for x in xs).encode()).hexdigest()[:16])
""")


@needs_acetest_data
def test_seeded_acetest_candidates_unchanged(tmp_path):
    # a fresh process, as the campaign draws each API's candidates in one
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-c", SCRIPT, ACETEST_DATA, *GOLDEN], cwd=str(tmp_path),
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    got = dict(line.split() for line in r.stdout.splitlines())
    assert got == GOLDEN


def test_filler_tables_cover_every_kind():
    from acetest_ml.solve.fill import ITEM_FILLERS, VALUE_FILLERS
    # dtype arguments are drawn before the table is consulted (tensors follow them)
    assert set(VALUE_FILLERS) == set(ARG_KINDS) - {DTYPE}
    assert set(ITEM_FILLERS) == set(LIST_KINDS)


def test_old_import_path_is_the_new_modules():
    from acetest_ml.solve import acetest, acetest_problem, fill, smt2, z3walk
    assert acetest.AcetestProblem is acetest_problem.AcetestProblem
    assert acetest.read_constraint_file is smt2.read_constraint_file
    assert acetest.keep_interesting is z3walk.keep_interesting
    assert acetest.Filler is fill.Filler
    for name in acetest.__all__:
        assert hasattr(acetest, name), name
