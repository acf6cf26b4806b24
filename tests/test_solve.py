"""Registry-derived constraints, YAML rules and the Z3 sampler (real Z3)."""
import subprocess
import sys
import textwrap

import pytest
import z3

from acetest_ml.errors import ConfigError
from acetest_ml.model import (BOOL, DTYPE, INT, INT_LIST, STR, TENSOR, TENSOR_LIST, ApiSpec, ArgSpec,
                              DTypeValue, TensorDesc)
from acetest_ml.solve.registry import RegistryProblem
from acetest_ml.solve.rules import compile_rule, load_rules_file
from acetest_ml.solve.sampler import NoSolutionError, Sampler


def conv_spec():
    return ApiSpec("tf.raw_ops.Conv2D", "tf", [
        ArgSpec("input", TENSOR, dtype_ref="T"), ArgSpec("filter", TENSOR, dtype_ref="T"),
        ArgSpec("T", DTYPE, allowed=["float16", "float32", "float64", "int32"], passed=False),
        ArgSpec("strides", INT_LIST), ArgSpec("padding", STR, allowed=["SAME", "VALID", "EXPLICIT"]),
        ArgSpec("use_cudnn_on_gpu", BOOL, has_default=True, default=True),
        ArgSpec("data_format", STR, allowed=["NHWC", "NCHW"], has_default=True, default="NHWC"),
        ArgSpec("dilations", INT_LIST, has_default=True, default=[1, 1, 1, 1])])


CONV_RULES = ["input.rank == 4", "filter.rank == 4", "len(strides) == 4",
              "input.dim[-1] == filter.dim[2]", "padding in ('SAME', 'VALID')", "T == 'float32'"]


def test_sampler_is_deterministic_and_distinct():
    a = Sampler([RegistryProblem(conv_spec(), CONV_RULES)], seed=3).take(60)
    b = Sampler([RegistryProblem(conv_spec(), CONV_RULES)], seed=3).take(60)
    c = Sampler([RegistryProblem(conv_spec(), CONV_RULES)], seed=4).take(60)
    assert [x.dumps() for x in a] == [x.dumps() for x in b]
    assert [x.dumps() for x in a] != [x.dumps() for x in c]
    assert len({x.key() for x in a}) == 60  # every solution distinct


def test_rules_hold_in_every_sample():
    for ai in Sampler([RegistryProblem(conv_spec(), CONV_RULES)], seed=0).take(80):
        inp, flt = ai.args["input"], ai.args["filter"]
        assert isinstance(inp, TensorDesc) and inp.rank == 4 and flt.rank == 4
        assert inp.shape[-1] == flt.shape[2]
        assert len(ai.args["strides"]) == 4
        assert ai.args["padding"] in ("SAME", "VALID")
        assert ai.args["T"] == DTypeValue("float32")
        assert inp.dtype == flt.dtype == "float32"  # shared dtype attribute


def test_unconstrained_samples_spread_out():
    xs = Sampler([RegistryProblem(conv_spec())], seed=1).take(150)
    ranks = {x.args["input"].rank for x in xs}
    assert len(ranks) >= 5
    dtypes = {x.args["input"].dtype for x in xs}
    assert len(dtypes) >= 3
    for x in xs:
        # shared dtype attr: both tensors follow T
        assert x.args["input"].dtype == x.args["filter"].dtype == x.args["T"].name
        assert all(d >= 1 for d in x.args["input"].shape)
        assert x.args["input"].numel <= 100_000


def test_number_attr_links_list_length():
    spec = ApiSpec("tf.raw_ops.AddN", "tf", [
        ArgSpec("inputs", TENSOR_LIST, dtype_ref="T", length_ref="N"),
        ArgSpec("N", INT, minimum=1, passed=False),
        ArgSpec("T", DTYPE, allowed=["float32", "int32"], passed=False)])
    for x in Sampler([RegistryProblem(spec)], seed=0).take(40):
        assert len(x.args["inputs"]) == x.args["N"] >= 1
        assert len({t.shape for t in x.args["inputs"]}) == 1


def test_axis_rule_with_negative_index_and_lists():
    spec = ApiSpec("x.op", "torch", [ArgSpec("self", TENSOR, dtypes=["float32"]),
                                     ArgSpec("dim", INT), ArgSpec("sizes", INT_LIST)])
    rules = ["self.rank >= 2", "dim >= -self.rank and dim < self.rank", "len(sizes) == self.rank",
             "sizes[-1] == self.dim[-1]", "self.dim[-2] % 2 == 0"]
    for x in Sampler([RegistryProblem(spec, rules)], seed=5).take(40):
        r = x.args["self"].rank
        assert -r <= x.args["dim"] < r
        assert len(x.args["sizes"]) == r and x.args["sizes"][-1] == x.args["self"].shape[-1]
        assert x.args["self"].shape[-2] % 2 == 0


def test_unsatisfiable_rules_raise():
    p = RegistryProblem(conv_spec(), ["input.rank == 4", "input.rank == 3"])
    with pytest.raises(NoSolutionError):
        Sampler([p], seed=0).next()


def test_fill_range_rules_decide_a_float_tensors_range():
    """``x.low`` / ``x.high``: the solver picks among the fill ranges those
    that satisfy the rule (either side of the comparison), the evaluator
    reads them off the AbstractInput, and anything but a number is refused."""
    from acetest_ml.learn.evaluate import holds
    from acetest_ml.solve.registry import FLOAT_RANGES
    for rule in ("input.low >= 0 and input.high <= 1", "0 <= input.low and 1 >= input.high",
                 "input.high > 5", "-1 < input.low"):
        s = Sampler([RegistryProblem(conv_spec(), ["T == 'float32'", rule])], seed=2)
        seen = set()
        for _ in range(12):
            ai = s.next()
            t = ai.args["input"]
            assert holds(rule, ai) and (t.low, t.high) in FLOAT_RANGES
            seen.add((t.low, t.high))
        want = {r for r in FLOAT_RANGES if eval_range(rule, r)}
        assert seen <= want
    assert not holds("input.low >= 0", _with_range(-1.0, 1.0))
    assert holds("input.low >= 0 and input.high <= 1", _with_range(0.0, 1.0))
    with pytest.raises(NoSolutionError):  # no fill range is this narrow
        Sampler([RegistryProblem(conv_spec(), ["input.high < -20"])], seed=0).next()
    with pytest.raises(ConfigError, match="compares with a number"):
        RegistryProblem(conv_spec(), ["input.low >= filter.rank"])


def eval_range(rule, r):
    from acetest_ml.learn.evaluate import holds
    return holds(rule, _with_range(*r))


def _with_range(low, high):
    from acetest_ml.model import AbstractInput
    return AbstractInput("tf.raw_ops.Conv2D", {"input": TensorDesc("float32", (2, 2), low, high)}, 0)


def test_rule_errors_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown argument"):
        RegistryProblem(conv_spec(), ["nosuch.rank == 1"])
    with pytest.raises(ConfigError, match="unsupported syntax"):
        RegistryProblem(conv_spec(), ["[x for x in input]"])
    bad = tmp_path / "rules.yaml"
    bad.write_text("rules:\n  tf.raw_ops.Conv2D: [input.rank == \n")
    with pytest.raises(ConfigError, match="rules.yaml"):
        load_rules_file(str(bad))
    bad.write_text("rules:\n  tf.raw_ops.Conv2D:\n    - 'input.rank =='\n")
    with pytest.raises(ConfigError, match="cannot parse"):
        load_rules_file(str(bad))
    bad.write_text("rulez: {}\n")
    with pytest.raises(ConfigError, match="rulez"):
        load_rules_file(str(bad))


def test_rules_never_execute_python(tmp_path):
    marker = tmp_path / "pwned"
    with pytest.raises(ConfigError):
        RegistryProblem(conv_spec(), [f"__import__('os').system('touch {marker}') == 0"])
    assert not marker.exists()


def test_determinism_across_processes(tmp_path):
    script = tmp_path / "draw.py"
    script.write_text(textwrap.dedent("""
        import hashlib, sys
        sys.path.insert(0, %r)
        from test_solve import conv_spec, CONV_RULES
        from acetest_ml.solve.registry import RegistryProblem
        from acetest_ml.solve.sampler import Sampler
        xs = Sampler([RegistryProblem(conv_spec(), CONV_RULES)], seed=11).take(25)
        print(hashlib.sha256("".join(x.dumps() for x in xs).encode()).hexdigest())
    """) % str(__import__("pathlib").Path(__file__).parent))
    outs = {subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                           check=True).stdout for _ in range(2)}
    here = Sampler([RegistryProblem(conv_spec(), CONV_RULES)], seed=11).take(25)
    import hashlib
    assert outs == {hashlib.sha256("".join(x.dumps() for x in here).encode()).hexdigest() + "\n"}


def test_model_reuse_keeps_few_solver_models_per_set():
    s = Sampler([RegistryProblem(conv_spec(), CONV_RULES)], seed=2, models_per_set=3)
    xs = s.take(40)
    shapes = {(x.args["input"].shape, x.args["filter"].shape, tuple(x.args["strides"])) for x in xs}
    assert len(shapes) == 3  # three solver models, each reused with fresh random fills
    assert s.stats.draws == 40
    again = Sampler([RegistryProblem(conv_spec(), CONV_RULES)], seed=2, models_per_set=3).take(40)
    assert [x.dumps() for x in again] == [x.dumps() for x in xs]
