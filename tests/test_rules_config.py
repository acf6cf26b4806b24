"""The shipped benchmark list (benchmarks/apis.yaml) and per-API rules
(configs/rules.yaml) load, name real APIs, and every rule compiles against the
real spec of its API (TensorFlow op registry / PyTorch schemas)."""
from __future__ import annotations

import json
import os

import pytest

from acetest_ml.bench.protocol import load_bench_config
from acetest_ml.solve.registry import RegistryProblem
from acetest_ml.solve.rules import load_rules_file
from acetest_ml.solve.sampler import Sampler
from acetest_ml.spec import get_spec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RULES = os.path.join(ROOT, "configs", "rules.yaml")
APIS = os.path.join(ROOT, "benchmarks", "apis.yaml")
MANIFEST = os.path.join(ROOT, "..", "shared", "acetest-data", "MANIFEST.json")


@pytest.fixture(scope="module")
def rules():
    return load_rules_file(RULES)


@pytest.fixture(scope="module")
def bench():
    return load_bench_config(APIS)


@pytest.fixture(scope="module")
def specs(rules, bench):
    names = sorted(set(rules) | set(bench.registry_apis))
    return {name: get_spec(name) for name in names}


def test_rules_file_shape(rules):
    assert len(rules) >= 40
    for api, exprs in rules.items():
        assert api.startswith(("tf.raw_ops.", "torch.ops.aten.")), api
        assert exprs, f"{api}: empty rule list"


def test_every_rule_compiles_and_samples(rules, specs):
    failures = []
    for api, exprs in sorted(rules.items()):
        spec = specs[api]
        assert spec.supported, f"{api}: {spec.unsupported}"
        problem = RegistryProblem(spec, exprs)   # raises RuleError on a bad rule
        assert problem.set_id == "registry+rules"
        try:
            inp = Sampler([problem], seed=0).next()
        except Exception as e:  # the rules must leave at least one solution
            failures.append(f"{api}: {type(e).__name__}: {e}")
            continue
        assert inp.api == api
    assert not failures, "\n".join(failures)


def test_rules_hold_in_samples(specs, rules):
    """A few hard rank rules really constrain what the sampler draws."""
    checks = [("torch.ops.aten.mm", lambda a: len(a["self"].shape) == 2 and len(a["mat2"].shape) == 2),
              ("tf.raw_ops.Dilation2D", lambda a: len(a["input"].shape) == 4 and len(a["strides"]) == 4
               and a["strides"][0] == 1 and a["rates"][3] == 1),
              ("torch.ops.aten.conv2d", lambda a: len(a["input"].shape) in (3, 4) and len(a["weight"].shape) == 4)]
    for api, ok in checks:
        sampler = Sampler([RegistryProblem(specs[api], rules[api])], seed=3)
        for _ in range(5):
            inp = sampler.next()
            assert ok(inp.args), f"{api}: {inp.args}"


def test_registry_apis_have_supported_specs(bench, specs):
    for api in bench.registry_apis:
        assert specs[api].supported, f"{api}: {specs[api].unsupported}"


def test_bench_lists(bench, rules):
    with open(MANIFEST) as f:
        acetest = list(json.load(f)["apis"])
    assert set(acetest) <= set(bench.acetest_apis)
    assert not set(bench.acetest_apis) & set(bench.registry_apis)
    assert len(set(bench.apis)) == len(bench.apis), "duplicate API names"
    assert len(bench.apis) >= 100
    assert sum(a.startswith("torch.") for a in bench.apis) >= 30
    assert len(bench.registry_apis) >= 70
    assert os.path.exists(bench.rules), bench.rules
    assert os.path.samefile(bench.rules, RULES)
    # rules only name APIs of the registry list (ACETest APIs use their own data)
    assert set(rules) <= set(bench.registry_apis)
    assert bench.budget_train >= bench.budget_eval > 0
    assert bench.seed_train != bench.seed_eval


def test_quick_subset(bench):
    quick = load_bench_config(APIS, quick=True)
    assert quick.quick
    assert 4 <= len(quick.apis) <= 8
    assert set(quick.apis) <= set(bench.apis)
    assert quick.acetest_apis and quick.registry_apis
    assert any(a.startswith("torch.") for a in quick.registry_apis)
    assert quick.budget_train < bench.budget_train and quick.budget_eval < bench.budget_eval
