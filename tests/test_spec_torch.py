"""ApiSpecs from PyTorch's aten schemas (real torch, real OpInfo database)."""
from __future__ import annotations

import json
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
import torch

from acetest_ml.errors import UnknownApiError, UserError
from acetest_ml.model import (BOOL, DTYPE, INT, INT_LIST, SCALAR, STR, TENSOR, TENSOR_LIST,
                              AbstractInput, ApiSpec)
from acetest_ml.spec import torch as tspec
from acetest_ml.execute.frameworks import TorchAdapter
from acetest_ml.execute.worker import build_call
from acetest_ml.materialize import plan_call

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def specs() -> dict[str, ApiSpec]:
    return tspec.load_torch_specs()


_ADAPTER = TorchAdapter()


def _plan(spec: ApiSpec, values: dict) -> dict:
    # concrete values stand in for abstract ones: the plan depends on names only
    return plan_call(spec, AbstractInput(spec.name, values))


def _call(spec: ApiSpec, values: dict):
    """Call the op exactly the way the worker does (its planner, its call builder)."""
    ai = AbstractInput(spec.name, values)
    fn, args, kwargs = build_call(_ADAPTER, ai, plan_call(spec, ai))
    return fn(*args, **kwargs)


def test_conv2d_spec(specs):
    s = specs["torch.ops.aten.conv2d"]
    assert s.framework == "torch" and s.source == "registry" and s.supported
    assert [a.name for a in s.args] == ["input", "weight", "bias", "stride", "padding", "dilation",
                                       "groups"]
    assert s.arg("input").kind == TENSOR and not s.arg("input").optional
    assert s.arg("weight").kind == TENSOR and not s.arg("weight").optional
    bias = s.arg("bias")
    assert bias.kind == TENSOR and bias.optional and bias.has_default and bias.default is None
    for name, default in (("stride", [1, 1]), ("padding", [0, 0]), ("dilation", [1, 1])):
        a = s.arg(name)
        assert a.kind == INT_LIST and a.length == 2 and a.has_default and a.default == default
        assert not a.keyword_only
    assert s.arg("groups").kind == INT and s.arg("groups").default == 1
    assert s.notes["dtype_source"] == "opinfo"
    dts = s.arg("input").dtypes
    assert "float32" in dts and "float64" in dts and "bool" not in dts
    assert s.arg("weight").dtypes == dts == s.arg("bias").dtypes
    assert s.notes["same_dtype_group"] == ["input", "weight", "bias"]
    # conv2d.padding takes a string with known values
    sp = specs["torch.ops.aten.conv2d.padding"]
    assert sp.arg("padding").kind == STR and sp.arg("padding").default == "valid"
    assert set(sp.arg("padding").allowed) == {"valid", "same"}


def test_max_pool2d_spec(specs):
    s = specs["torch.ops.aten.max_pool2d"]
    ks = s.arg("kernel_size")
    assert ks.kind == INT_LIST and ks.length == 2 and not ks.has_default
    # "int[2] padding=0" is a scalar default broadcast to the list length
    assert s.arg("padding").default == [0, 0] and s.arg("dilation").default == [1, 1]
    cm = s.arg("ceil_mode")
    assert cm.kind == BOOL and cm.has_default and cm.default is False


def test_add_tensor_spec_and_call(specs):
    s = tspec.get_torch_spec("torch.ops.aten.add.Tensor")
    assert [a.name for a in s.args] == ["self", "other", "alpha"]
    alpha = s.arg("alpha")
    assert alpha.kind == SCALAR and alpha.keyword_only and alpha.default == 1
    assert not s.arg("self").keyword_only
    a, b = torch.ones(2, 3), torch.full((2, 3), 2.0)
    out = _call(s, {"self": a, "other": b, "alpha": 2})
    assert torch.equal(out, torch.full((2, 3), 5.0))


def test_conv2d_callable_with_spec_order(specs):
    s = specs["torch.ops.aten.conv2d"]
    assert _ADAPTER.resolve(s.name) is torch.ops.aten.conv2d
    x = torch.ones(1, 1, 4, 4, dtype=torch.float64)
    w = torch.ones(2, 1, 3, 3, dtype=torch.float64)
    out = _call(s, {"input": x, "weight": w})
    assert out.shape == (1, 2, 2, 2) and float(out[0, 0, 0, 0]) == 9.0
    out = _call(s, {"input": x, "weight": w, "bias": torch.zeros(2, dtype=torch.float64),
                    "stride": [2, 2], "padding": [1, 1]})
    assert out.shape == (1, 2, 2, 2)


def test_worker_plan_handles_gaps(specs):
    # conv2d with bias absent but stride given: stride must go by keyword
    s = specs["torch.ops.aten.conv2d"]
    plan = _plan(s, {"input": 1, "weight": 2, "stride": [2, 2]})
    assert plan["positional"] == ["input", "weight"] and plan["keyword"] == ["stride"]
    assert plan["none"] == []  # bias has a schema default (None): left out
    # optional without default must be passed as None
    s = specs["torch.ops.aten.sum.dim_IntList"]
    dim = s.arg("dim")
    assert dim.kind == INT_LIST and dim.optional and not dim.has_default and dim.length == 1
    assert s.arg("dtype").kind == DTYPE and s.arg("dtype").keyword_only
    x = torch.arange(6.0).reshape(2, 3)
    assert _plan(s, {"self": x})["none"] == ["dim"]
    assert float(_call(s, {"self": x})) == 15.0
    assert _call(s, {"self": x, "dim": [1], "keepdim": True}).shape == (2, 1)
    # an omitted positional Layout?/Device? pair: later positional args become keywords
    s = specs["torch.ops.aten._nested_tensor_from_tensor_list"]
    assert s.notes["omitted"] == ["layout", "device"]
    assert not s.arg("dtype").keyword_only
    assert s.arg("pin_memory").keyword_only and s.notes["keyword_forced"] == ["pin_memory"]
    parts = [torch.ones(2, 3), torch.ones(1, 3)]
    values = {"list": parts, "dtype": torch.float64, "pin_memory": False}
    plan = _plan(s, values)
    assert plan["positional"] == ["list", "dtype"] and plan["keyword"] == ["pin_memory"]
    nt = _call(s, values)
    assert nt.is_nested and nt.dtype == torch.float64
    # an omitted Generator? without default is passed as None
    s = specs["torch.ops.aten.randn.generator"]
    assert s.notes["pass_none"] == ["generator"] and not s.has_arg("generator")
    assert _plan(s, {"size": [2, 3]})["none"] == ["generator"]
    assert _call(s, {"size": [2, 3]}).shape == (2, 3)


def test_factory_op_omits_layout_and_device(specs):
    s = specs["torch.ops.aten.zeros"]
    assert s.supported
    assert [a.name for a in s.args] == ["size", "dtype", "pin_memory"]
    assert s.notes["omitted"] == ["layout", "device"]
    assert s.arg("dtype").kind == DTYPE and s.arg("dtype").optional
    # a ScalarType default is given as a canonical dtype name
    assert specs["torch.ops.aten.triu_indices"].arg("dtype").default == "int64"


def test_unsupported_reasons(specs):
    assert specs["torch.ops.aten.add_.Tensor"].unsupported == "mutates input"
    assert specs["torch.ops.aten.add.out"].unsupported == "out variant"
    assert specs["torch.ops.aten.conv2d"].unsupported is None
    # a required Device argument cannot be built
    assert specs["torch.ops.aten.to.device"].unsupported == "Device arg"
    # TorchScript interpreter builtins are not dispatcher ops
    assert specs["torch.ops.aten.add.int"].unsupported == "JIT-only op"
    assert specs["torch.ops.aten.to.prim_Device"].unsupported == "JIT-only op"
    # dispatcher ops without any tensor
    assert specs["torch.ops.aten.promote_types"].unsupported == "no tensor in or out"
    # private ops are allowed
    assert specs["torch.ops.aten._softmax"].supported


def test_index_and_mask_dtypes(specs):
    s = specs["torch.ops.aten.index_select"]
    assert s.arg("index").dtypes == ["int64", "int32"]
    assert s.notes["same_dtype_group"] == ["self"]
    m = specs["torch.ops.aten.masked_fill.Scalar"]
    assert m.arg("mask").dtypes == ["bool"]
    idx = specs["torch.ops.aten.index.Tensor"]
    assert idx.arg("indices").kind == TENSOR_LIST and idx.notes["none_items"] == ["indices"]
    nll = specs["torch.ops.aten.nll_loss"]
    assert nll.arg("target").dtypes == ["int64", "int32"]
    assert nll.notes["same_dtype_group"] == ["self", "weight"]


def test_default_dtypes_without_opinfo(specs):
    # no OpInfo exists for this private op
    s = specs["torch.ops.aten._softmax"]
    assert s.notes["dtype_source"] == "default"
    assert s.arg("self").dtypes == tspec.DEFAULT_DTYPES
    assert tspec.DEFAULT_DTYPES[0] == "float32"


def test_get_torch_spec_name_forms():
    ref = tspec.get_torch_spec("torch.ops.aten.conv2d")
    for name in ("aten::conv2d", "conv2d", "torch.ops.aten.conv2d.default", " conv2d "):
        assert tspec.get_torch_spec(name) is ref
    assert tspec.get_torch_spec("aten::add.Tensor").name == "torch.ops.aten.add.Tensor"
    assert tspec.get_torch_spec("add.Tensor").name == "torch.ops.aten.add.Tensor"


def test_unknown_api_error():
    with pytest.raises(UnknownApiError) as ei:
        tspec.get_torch_spec("torch.ops.aten.conv2dd")
    msg = str(ei.value)
    assert isinstance(ei.value, UserError) and "\n" not in msg
    assert "conv2dd" in msg and "torch.ops.aten.conv2d" in msg
    assert msg.count("torch.ops.aten.") <= 4  # the name + at most 3 suggestions
    with pytest.raises(UnknownApiError) as ei:
        tspec.get_torch_spec("add.NoSuchOverload")
    assert "torch.ops.aten.add.Tensor" in str(ei.value)
    with pytest.raises(UnknownApiError) as ei:
        tspec.get_torch_spec("zzzz_not_an_op_qqq")
    assert "no close match" in str(ei.value)


def test_counts(specs):
    c = tspec.spec_counts(specs)
    assert c["total"] == len(specs) > 2000
    assert c["supported"] + c["unsupported"] == c["total"]
    assert c["supported"] > 0.4 * c["total"]
    assert sum(c["reasons"].values()) == c["unsupported"]
    top = [r for r, _ in c["top_reasons"]]
    assert "out variant" in top and "mutates input" in top
    counts = [n for _, n in c["top_reasons"]]
    assert counts == sorted(counts, reverse=True)
    # every aten schema is present, under unique names
    n_aten = sum(1 for s in torch._C._jit_get_all_schemas() if s.name.startswith("aten::"))
    assert c["total"] == n_aten


def test_specs_round_trip_json(specs):
    for name in ("torch.ops.aten.conv2d", "torch.ops.aten.add.Tensor", "torch.ops.aten.zeros"):
        s = specs[name]
        back = ApiSpec.from_dict(json.loads(json.dumps(s.to_dict())))
        assert back.to_dict() == s.to_dict()


def test_canonical_dtype():
    """One canonical_dtype for torch dtype objects, TF names and enum names,
    ACETest spellings."""
    from acetest_ml.model import canonical_dtype
    assert canonical_dtype(torch.float32) == "float32"
    assert canonical_dtype(torch.bfloat16) == "bfloat16"
    assert canonical_dtype(torch.complex64) == "complex64"
    assert canonical_dtype(torch.bool) == "bool"
    assert canonical_dtype(torch.half) == "float16"
    assert canonical_dtype(torch.complex32) is None
    assert canonical_dtype(torch.quint8) is None
    assert canonical_dtype("tf.half") == "float16" and canonical_dtype("double") == "float64"
    assert canonical_dtype("DT_FLOAT") == "float32" and canonical_dtype("DT_FLOAT_REF") is None
    assert canonical_dtype("tf.qint8") is None and canonical_dtype("resource") is None
    assert canonical_dtype(7) is None and canonical_dtype(None) is None


def test_opinfo_cache_used_and_rebuilt(tmp_path):
    path = tmp_path / "opinfo.json"
    # a valid cache is read as is (no recomputation)
    path.write_text(json.dumps({"format": tspec.CACHE_FORMAT, "torch_version": torch.__version__,
                                "dtypes": {"conv2d": ["float64"]}}))
    table = tspec.load_opinfo_dtypes(path)
    assert table == {"conv2d": ["float64"]}
    specs = tspec.load_torch_specs(opinfo=table)
    assert specs["torch.ops.aten.conv2d"].arg("weight").dtypes == ["float64"]
    assert specs["torch.ops.aten.conv2d"].notes["dtype_source"] == "opinfo"
    assert specs["torch.ops.aten.max_pool2d"].notes["dtype_source"] == "default"
    # a corrupt cache is recomputed from op_db and rewritten
    path.write_text("{not json")
    table = tspec.load_opinfo_dtypes(path)
    assert "float32" in table["conv2d"] and "float32" in table["max_pool2d"]
    assert "bool" not in table["conv2d"]
    assert "add" in table and "bool" in table["add"]
    saved = json.loads(path.read_text())
    assert saved["torch_version"] == torch.__version__ and saved["dtypes"] == table
    assert table == tspec.load_opinfo_dtypes()  # same table as the default cache
