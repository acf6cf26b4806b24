"""Learned rules in real campaigns: the checks a rule passes, the YAML it
becomes, offline learning, ACETest constraints and resume after SIGKILL."""
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from acetest_ml.cli import main
from acetest_ml.execute.supervisor import Executor
from acetest_ml.learn import LearningSampler
from acetest_ml.learn.evaluate import holds
from acetest_ml.learn.learner import KEPT, REJECTED, RuleLearner
from acetest_ml.learn.patterns import message_key
from acetest_ml.learn.sampling import registry_check
from acetest_ml.model import AbstractInput, TensorDesc
from acetest_ml.solve.registry import RegistryProblem
from acetest_ml.solve.rules import load_rules_file
from acetest_ml.spec import get_spec

from helpers import ACETEST_DATA, candidates, needs_acetest_data

ENV = dict(os.environ, OMP_NUM_THREADS="1", TF_CPP_MIN_LOG_LEVEL="2")


@pytest.fixture(scope="module")
def tf_exec():
    ex = Executor("tf", timeout=30)
    yield ex
    ex.close()


def test_wrong_rules_are_dropped(tf_exec):
    spec = get_spec("tf.raw_ops.BiasAdd")
    # learning from nothing but the rules the test proposes
    learner = RuleLearner(spec, registry_check(spec), window=10, sources=())
    sampler = LearningSampler(spec, [RegistryProblem(spec)], seed=4)
    sampler.learner = learner
    # unsatisfiable with the spec's bounds: rejected before it is used
    assert not learner._propose("value.rank == 9", "test")
    assert learner.rules[-1].status == REJECTED and "unsatisfiable" in learner.rules[-1].reason
    # a wrong reading of "Biases must be 1D": blames the other argument
    key = message_key("Biases must be 1D: [2,2] [Op:BiasAdd]")
    assert learner._propose("value.rank == 3", "test", key=key)
    wrong = learner.rules[-1]
    wrong.pre_rate = 0.6
    sampler._new_epoch()
    for _ in range(40):
        ai = sampler.next()
        assert holds("value.rank == 3", ai) or wrong.status == REJECTED
        res = tf_exec.run(spec, ai)
        sampler.observe(ai, res.outcome, res.message)
        if wrong.status != "probation":
            break
    assert wrong.status == REJECTED and "did not lower" in wrong.reason, wrong
    assert learner.active() == []
    # the sampler went back to the rules it had: ranks other than 3 again
    ranks = {sampler.next().args["value"].rank for _ in range(30)}
    assert ranks - {3}
    # the right reading is kept once its failure stops
    assert learner._propose("bias.rank == 1", "test", key=key)
    right = learner.rules[-1]
    assert learner._propose("value.rank >= 2", "test")
    assert learner._propose("bias.dim[0] == value.dim[-1]", "test")
    sampler._new_epoch()
    for _ in range(12):
        ai = sampler.next()
        res = tf_exec.run(spec, ai)
        sampler.observe(ai, res.outcome, res.message)
    assert right.status == KEPT and right.pre_rate > 0
    # a rule contradicting a passing run is refused
    assert learner.passing
    r = learner.passing[0].args["value"].rank
    assert not learner._propose(f"value.rank != {r}", "test")
    assert learner.rules[-1].reason == "contradicts a passing run"


def _run(args):
    return subprocess.run([sys.executable, "-m", "acetest_ml.cli"] + args, env=ENV,
                          capture_output=True, text=True)


def test_learn_rules_campaign_yaml_round_trip_and_offline(tmp_path):
    out = str(tmp_path / "learn")
    apis = ["tf.raw_ops.BiasAdd", "torch.ops.aten.mm"]
    api_args = [x for a in apis for x in ("--api", a)]
    assert main(["campaign"] + api_args + ["--budget", "30", "--seed", "1", "--out", out, "--jobs", "1",
                                           "--no-progress", "--learn-rules"]) == 0
    summary = json.load(open(os.path.join(out, "summary.json")))
    rules_file = os.path.join(out, "learned_rules.yaml")
    learned = load_rules_file(rules_file)
    for api in apis:
        lr = summary["apis"][api]["learned"]
        active = [r for r in lr["rules"] if r["status"] in ("kept", "probation")]
        assert active and all(isinstance(r["adopted_at"], int) for r in active)
        assert learned[api] == [r["expr"] for r in active]
    assert "bias.rank == 1" in learned["tf.raw_ops.BiasAdd"]
    assert summary["overall"]["learned_rules"]["apis"] == 2
    # every candidate says which rule set produced it
    db = sqlite3.connect(os.path.join(out, "runs.sqlite"))
    origins = [json.loads(r[0])["origin"]["rules"] for r in db.execute("SELECT input FROM candidates")]
    db.close()
    assert "base" in origins and any(o.startswith("learned@") for o in origins)
    # the learned file works with --rules: every input satisfies its rules,
    # and the pass rate is far above the first runs' (which had no rules)
    out2 = str(tmp_path / "reuse")
    assert main(["campaign"] + api_args + ["--budget", "15", "--seed", "2", "--out", out2, "--jobs", "1",
                                           "--no-progress", "--rules", rules_file]) == 0
    s2 = json.load(open(os.path.join(out2, "summary.json")))
    db = sqlite3.connect(os.path.join(out2, "runs.sqlite"))
    for api_, inp in db.execute("SELECT api, input FROM candidates"):
        ai = AbstractInput.loads(inp)
        assert all(holds(e, ai) for e in learned[api_])
    db.close()
    assert s2["overall"]["pooled_pass_rate"] >= 0.5
    # offline: learn from the store; the output loads and compiles
    off = str(tmp_path / "offline.yaml")
    r = _run(["rules", "learn", "--runs", out, "-o", off])
    assert r.returncode == 0, r.stderr[-1500:]
    got = load_rules_file(off)
    assert "bias.rank == 1" in got["tf.raw_ops.BiasAdd"]
    for api, exprs in got.items():
        RegistryProblem(get_spec(api), exprs)
    # bad input to rules learn: one line, exit 2
    r = _run(["rules", "learn", "--runs", str(tmp_path / "nothing"), "-o", off])
    assert r.returncode == 2 and "Traceback" not in r.stderr
    r = _run(["rules", "learn", "--runs", out, "-o", str(tmp_path)])
    assert r.returncode == 2 and "folder" in r.stderr


def test_malformed_learned_rules_file_exit_2(tmp_path, capsys):
    bad = tmp_path / "learned_rules.yaml"
    bad.write_text('rules:\n  "tf.raw_ops.BiasAdd":\n    - "bias.rank =="\n')
    assert main(["campaign", "--api", "tf.raw_ops.BiasAdd", "--rules", str(bad), "--learn-rules",
                 "--out", str(tmp_path / "x")]) == 2
    err = [l for l in capsys.readouterr().err.splitlines() if l.startswith("acetest-ml:")]
    assert len(err) == 1 and "learned_rules.yaml" in err[0]


@needs_acetest_data
def test_learn_rules_with_acetest_constraints_and_filter(tmp_path):
    out = str(tmp_path / "ace")
    assert main(["campaign", "--api", "tf.raw_ops.AvgPool", "--constraints", "acetest",
                 "--acetest-data", ACETEST_DATA, "--budget", "40", "--seed", "3", "--out", out,
                 "--jobs", "1", "--no-progress", "--learn-rules", "--ml-filter", "online",
                 "--warmup", "20"]) == 0
    s = json.load(open(os.path.join(out, "summary.json")))
    v = s["apis"]["tf.raw_ops.AvgPool"]
    assert v["constraints"] == "acetest" and v["executed"] == 40
    lr = v["learned"]
    db = sqlite3.connect(os.path.join(out, "runs.sqlite"))
    rows = [AbstractInput.loads(r[0]) for r in db.execute("SELECT input FROM candidates ORDER BY idx")]
    db.close()
    # inputs drawn under a learned rule set satisfy its rules (enforced on
    # the decoded input for ACETest constraint sets)
    epochs = {f"learned@{e['epoch']}": e["rules"] for e in lr["epochs"]}
    assert len(epochs) >= 2, lr
    for ai in rows:
        for e in epochs.get(ai.origin["rules"], []):
            assert holds(e, ai)


def _rows(out):
    return candidates(out, "api, idx, input, decision, outcome")


def test_learn_rules_resume_after_sigkill_same_rules_and_records(tmp_path):
    out = str(tmp_path / "killed")
    cmd = [sys.executable, "-m", "acetest_ml.cli", "campaign", "--api", "tf.raw_ops.BiasAdd",
           "--budget", "100", "--seed", "7", "--jobs", "1",
           "--out", out, "--no-progress", "--learn-rules"]
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        time.sleep(0.02)
        if os.path.exists(os.path.join(out, "runs.sqlite")):
            try:
                if len(_rows(out)) >= 12:
                    break
            except sqlite3.OperationalError:
                continue
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = _rows(out)
    assert 12 <= len(before) < 100, "campaign finished before it could be killed"
    assert '"rules":"learned@' in before[-1][2]  # killed after it had learned
    r = subprocess.run(cmd + ["--resume"], env=ENV, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    after = _rows(out)
    assert after[: len(before)] == before  # nothing recorded lost or changed
    fresh = str(tmp_path / "fresh")
    r = subprocess.run(cmd[:cmd.index("--out") + 1] + [fresh, "--no-progress", "--learn-rules"],
                       env=ENV, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert [x[2] for x in _rows(fresh)] == [x[2] for x in after]
    assert [x[4] for x in _rows(fresh)] == [x[4] for x in after]
    rules = lambda d: open(os.path.join(d, "learned_rules.yaml")).read().splitlines()[2:]  # noqa: E731
    assert rules(fresh) == rules(out)
    s1 = json.load(open(os.path.join(out, "summary.json")))
    s2 = json.load(open(os.path.join(fresh, "summary.json")))
    for api in s1["apis"]:
        assert s1["apis"][api]["learned"]["rules"] == s2["apis"][api]["learned"]["rules"]


def test_rules_never_exclude_a_crash_input():
    # a crash input counts as a passing one for the rule checks: a rule
    # excluding it is refused, and a rule a later crash breaks is rejected
    spec = get_spec("tf.raw_ops.BiasAdd")
    learner = RuleLearner(spec, registry_check(spec), window=10, sources=())
    sampler = LearningSampler(spec, [RegistryProblem(spec)], seed=4)
    crash = sampler.next()
    r = crash.args["value"].rank
    assert learner._propose(f"value.rank != {r}", "test")  # nothing against it yet
    rule = learner.rules[-1]
    assert learner.observe(crash, "crash", None) is True
    assert rule.status == REJECTED and rule.reason == "violated by crash run 1"
    assert not learner._propose(f"value.rank <= {r - 1}", "test")
    assert learner.rules[-1].reason == "excludes a crash input"
    assert learner._propose(f"value.rank == {r}", "test")  # holds in the crash run
    assert learner.passing == [] and learner.crashing == [crash]


def test_a_known_crash_signature_no_longer_guards_rules():
    # with the campaign's known-crash k, a signature seen k times is known:
    # its runs then neither block a rule nor reject one they break, and a
    # rule refused for one of its inputs can be adopted on its next proposal;
    # a new signature still guards
    spec = get_spec("tf.raw_ops.BiasAdd")
    sampler = LearningSampler(spec, [RegistryProblem(spec)], seed=4)
    first = sampler.next()
    r = first.args["value"].rank
    learner = RuleLearner(spec, registry_check(spec), window=10, sources=(), known_crash_k=3)
    for _ in range(2):
        learner.observe(first, "crash", None, signature="SIGABRT: a")
    assert learner.crashing == [first, first]
    assert not learner._propose(f"value.rank != {r}", "test")  # not known yet: it guards
    assert learner.rules[-1].reason == "excludes a crash input"
    assert not learner._propose(f"value.rank != {r}", "test") and len(learner.rules) == 1
    learner.observe(first, "crash", None, signature="SIGABRT: a")  # the third: known
    assert learner.crashing == []
    assert learner._propose(f"value.rank != {r}", "test") and len(learner.rules) == 1
    rule = learner.rules[0]
    assert rule.status == "probation"
    # a run of the known signature that breaks the rule: no rejection
    assert learner.observe(first, "crash", None, signature="SIGABRT: a") is False
    assert rule.status == "probation"
    # a new signature does reject it
    assert learner.observe(first, "timeout", None, signature=None) is True
    assert rule.status == REJECTED and rule.reason == "violated by timeout run 5"
    assert learner.crashing == [first]
    # without k every crash run guards (the upstream hook's learner, offline learning)
    plain = RuleLearner(spec, registry_check(spec), window=10, sources=())
    for _ in range(5):
        plain.observe(first, "crash", None, signature="SIGABRT: a")
    assert len(plain.crashing) == 5


def test_a_rule_set_that_passes_less_often_than_no_rules_loses_its_newest_rule():
    from acetest_ml.learn.learner import GUARD_RUNS
    spec = get_spec("tf.raw_ops.BiasAdd")

    def ai(rank):
        return AbstractInput(spec.name, {"value": TensorDesc("float32", (2,) * rank),
                                         "bias": TensorDesc("float32", (2,))}, value_seed=0)

    def learner(fail_every):
        lr = RuleLearner(spec, registry_check(spec), window=10, sources=(), prior=["value.rank >= 2"])
        for _ in range(12):  # the sampler's outside share: drawn without the rules, passing
            lr.observe(ai(3), "pass", None, outside=True)
        changed = []
        for i in range(GUARD_RUNS):
            ok = i % fail_every != 0
            changed.append(lr.observe(ai(2), "pass" if ok else "invalid", None if ok else "boom"))
        return lr, changed

    lr, changed = learner(1)  # nothing passes with the rule, everything without it
    assert lr.rules[0].status == REJECTED and "passed less often than no learned rules" in lr.rules[0].reason
    assert changed[-1] and not any(changed[:-1])  # judged once, at GUARD_RUNS runs of the set
    lr, changed = learner(10)  # 27 of 30 against 12 of 12: no clear drop
    assert lr.rules[0].status == KEPT and not any(changed)
