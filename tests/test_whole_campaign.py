"""Whole-framework campaigns: one API's failure never ends the campaign, and a
seed gives the same records however the APIs are spread over processes."""
import json
import os
import shutil

import pytest

from acetest_ml.cli import main

from helpers import ACETEST_DATA, broken_data, candidates, needs_acetest_data as needs_data


def records(out):
    return candidates(out, "api, seed, idx, input, decision, outcome, exc_type", order="api, seed, idx")


@needs_data
@pytest.mark.parametrize("jobs", ["1", "2"])
def test_api_failing_in_our_code_is_recorded_and_campaign_goes_on(tmp_path, capsys, jobs):
    out = str(tmp_path / "c")
    rc = main(["campaign", "--constraints", "acetest", "--acetest-data", broken_data(tmp_path), "--acetest-extensions",
               "--api", "tf.raw_ops.Tile", "--api", "tf.raw_ops.BiasAdd", "--budget", "6", "--seed", "2",
               "--out", out, "--jobs", jobs])
    assert rc == 0
    captured = capsys.readouterr()
    printed = captured.out
    # the progress bar follows the store, also when pool processes write it;
    # the failed API's unused budget leaves the total
    assert "6/6" in captured.err and "APIs 2/2" in captured.err, captured.err[-500:]
    s = json.load(open(os.path.join(out, "summary.json")))
    tile = s["apis"]["tf.raw_ops.Tile"]
    assert tile["status"] == "error" and "incompatible" in tile["reason"], tile
    assert s["apis"]["tf.raw_ops.BiasAdd"]["executed"] == 6
    assert s["overall"]["apis_error"] == 1
    assert "error:" in printed and "overall" in printed


def test_name_the_worker_refuses_is_skipped_with_its_reason(tmp_path):
    # torch lists dunder overloads the worker will not call: the API is
    # recorded as skipped with that reason, the other API runs, exit 0
    out = str(tmp_path / "c")
    rc = main(["campaign", "--api", "torch.ops.aten.__and__.Scalar", "--api", "torch.ops.aten.mm",
               "--budget", "3", "--out", out, "--no-progress", "--jobs", "1"])
    assert rc == 0
    s = json.load(open(os.path.join(out, "summary.json")))
    bad = s["apis"]["torch.ops.aten.__and__.Scalar"]
    assert bad["status"] == "skipped" and "not a callable name" in bad["reason"]
    assert s["apis"]["torch.ops.aten.mm"]["executed"] == 3


@needs_data
def test_same_seed_same_records_with_jobs_1_and_2(tmp_path):
    # three APIs share one kernel's constraint files (ScanOp); BiasAdd runs
    # first on one process and not the other
    apis = ["tf.raw_ops.BiasAdd", "tf.raw_ops.Cumprod", "tf.raw_ops.Cumsum", "tf.raw_ops.CumulativeLogsumexp"]
    got = {}
    for jobs in ("1", "2"):
        out = str(tmp_path / f"j{jobs}")
        args = ["campaign", "--constraints", "acetest", "--acetest-data", ACETEST_DATA, "--budget", "25",
                "--seed", "11", "--out", out, "--no-progress", "--jobs", jobs]
        for a in apis:
            args += ["--api", a]
        assert main(args) == 0
        got[jobs] = records(out)
    assert len(got["1"]) >= 4 * 25
    assert got["1"] == got["2"]


@needs_data
def test_candidate_stream_does_not_depend_on_what_the_process_solved_before():
    # Z3 gives another model for the same query in a process that has solved
    # other constraints before; each API's stream comes from a fresh process
    from acetest_ml.campaign import CampaignConfig, resolve
    from acetest_ml.generate import CandidateStream
    from acetest_ml.solve.sampler import Sampler
    cfg = CampaignConfig(apis=["tf.raw_ops.Cumsum"], out="unused", constraints="acetest", acetest_data=ACETEST_DATA,
                         budget=300, seed=11)

    def stream():
        with CandidateStream(cfg, "tf.raw_ops.Cumsum") as s:
            assert s.status == "ready"
            return [a.dumps() for a in s.take(30)]

    before = stream()
    _, problems, _ = resolve(cfg, "tf.raw_ops.Conv2D")
    Sampler(problems, seed=1).take(30)  # solver history in this process
    assert stream() == before


def test_prefetch_does_not_change_the_order_of_candidates():
    # the prefetch thread draws ahead while runs execute; takes of mixed sizes
    # (warm-up runs take one, filtered batches 16) get the same candidates in
    # the same order as without it, from a resumed start too
    from acetest_ml.campaign import CampaignConfig
    from acetest_ml.generate import CandidateStream
    from acetest_ml.model import ApiSpec, ArgSpec
    spec = ApiSpec("tf.raw_ops.Conv2D", "tf", [
        ArgSpec("input", "tensor"), ArgSpec("filter", "tensor"), ArgSpec("T", "dtype", passed=False),
        ArgSpec("strides", "int_list"), ArgSpec("padding", "str")])

    def stream(prefetch):
        cfg = CampaignConfig(apis=[spec.name], out="unused", budget=300, seed=11, prefetch=prefetch)
        got = []
        with CandidateStream(cfg, spec.name, spec, start=5) as s:
            assert s.status == "ready" and (s._thread is not None) == (prefetch > 0)
            for n in (1, 1, 16, 3, 1, 16, 2):
                got.append([a.dumps() for a in s.take(n)])
        return got

    plain = stream(0)
    assert stream(16) == plain and stream(1) == plain
    assert sum(len(b) for b in plain) == 40 and len({x for b in plain for x in b}) > 30


def test_prefetch_raises_an_exhausted_stream_at_the_same_take(tmp_path):
    # constraints no input meets: with or without prefetch (which refills its
    # buffer in one round trip), the first take fails with NoSolutionError, and
    # so does every later one
    from acetest_ml.campaign import CampaignConfig
    from acetest_ml.generate import CandidateStream
    from acetest_ml.solve.sampler import NoSolutionError
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  tf.raw_ops.Relu:\n    - features.rank == 1\n    - features.rank == 2\n")
    for prefetch in (0, 16):
        cfg = CampaignConfig(apis=["tf.raw_ops.Relu"], out="unused", budget=10, seed=3, prefetch=prefetch,
                             rules=str(rules))
        with CandidateStream(cfg, "tf.raw_ops.Relu") as s:
            assert s.status == "ready"
            for n in (1, 16):
                with pytest.raises(NoSolutionError):
                    s.take(n)
