"""ApiSpecs from TensorFlow's op registry (real TensorFlow)."""
import inspect
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)

from acetest_ml.errors import UnknownApiError, UserError
from acetest_ml.model import (ALL_DTYPES, BOOL, DTYPE, DTYPE_LIST, INT, INT_LIST, SHAPE, STR,
                              TENSOR, TENSOR_LIST, ApiSpec, DTypeValue)
from acetest_ml.spec.tensorflow import (decode_attr_value, get_tf_spec, load_tf_specs,
                                        spec_counts)


@pytest.fixture(scope="module")
def specs():
    return load_tf_specs()


def call_from_spec(spec: ApiSpec, values: dict):
    """Call the op with only the passed=True args of ``spec`` (values given by
    the test; attrs not given are left to TF's defaults)."""
    fn = getattr(tf.raw_ops, spec.name.split(".")[-1])
    kwargs = {}
    for a in spec.args:
        if not a.passed:
            assert a.name not in values, f"{a.name} is inferred and must not be passed"
            continue
        if a.name not in values:
            assert a.has_default, f"{a.name} is required"
            continue
        v = values[a.name]
        kwargs[a.name] = v.name if isinstance(v, DTypeValue) else v
    return fn(**kwargs)


def test_conv2d(specs):
    s = get_tf_spec("tf.raw_ops.Conv2D")
    assert s is specs["tf.raw_ops.Conv2D"] or s.to_dict() == specs["tf.raw_ops.Conv2D"].to_dict()
    assert s.name == "tf.raw_ops.Conv2D" and s.framework == "tf" and s.source == "registry"
    assert s.supported
    for n in ("input", "filter"):
        a = s.arg(n)
        assert a.kind == TENSOR and a.dtype_ref == "T" and (a.min_rank, a.max_rank) == (0, 6)
    t = s.arg("T")
    assert t.kind == DTYPE and t.passed is False
    assert {"float32", "float16"} <= set(t.allowed) and set(t.allowed) <= set(ALL_DTYPES)
    assert s.arg("strides").kind == INT_LIST and not s.arg("strides").has_default
    assert s.arg("padding").kind == STR and s.arg("padding").allowed == ["SAME", "VALID", "EXPLICIT"]
    df = s.arg("data_format")
    assert df.has_default and df.default == "NHWC" and set(df.allowed) == {"NHWC", "NCHW"}
    assert s.arg("dilations").default == [1, 1, 1, 1]
    assert s.arg("explicit_paddings").has_default and s.arg("explicit_paddings").default == []
    assert s.arg("use_cudnn_on_gpu").kind == BOOL and s.arg("use_cudnn_on_gpu").default is True
    # call order = the wrapper's signature, inferred attrs last
    params = [p for p in inspect.signature(tf.raw_ops.Conv2D).parameters if p != "name"]
    assert [a.name for a in s.args if a.passed] == params
    assert s.args[-1].name == "T"
    # plain name works too
    assert get_tf_spec("Conv2D") is s


def test_conv2d_call_built_from_spec():
    s = get_tf_spec("Conv2D")
    x = tf.ones([1, 4, 4, 1], tf.float32)
    w = tf.ones([2, 2, 1, 1], tf.float32)
    out = call_from_spec(s, {"input": x, "filter": w, "strides": [1, 1, 1, 1],
                             "padding": s.arg("padding").allowed[1]})
    assert out.shape == (1, 3, 3, 1)
    assert float(out[0, 0, 0, 0]) == 4.0


def test_addn():
    s = get_tf_spec("AddN")
    inputs = s.arg("inputs")
    assert inputs.kind == TENSOR_LIST and inputs.length_ref == "N" and inputs.dtype_ref == "T"
    n = s.arg("N")
    assert n.kind == INT and n.minimum == 1 and n.passed is False
    out = call_from_spec(s, {"inputs": [tf.constant([1.0, 2.0]), tf.constant([3.0, 4.0])]})
    np.testing.assert_allclose(out.numpy(), [4.0, 6.0])


def test_cast_inferred_and_passed_dtypes():
    s = get_tf_spec("tf.raw_ops.Cast")
    assert s.arg("x").dtype_ref == "SrcT"
    assert s.arg("SrcT").kind == DTYPE and s.arg("SrcT").passed is False
    dst = s.arg("DstT")
    assert dst.kind == DTYPE and dst.passed is True and "int32" in dst.allowed
    out = call_from_spec(s, {"x": tf.constant([1.5, -2.5]), "DstT": DTypeValue("int32")})
    assert out.dtype == tf.int32 and out.numpy().tolist() == [1, -2]
    # passing the inferred attr is rejected by tf.raw_ops: that is what passed=False means
    with pytest.raises(TypeError):
        tf.raw_ops.Cast(x=tf.constant([1.0]), DstT=tf.int32, SrcT=tf.float32)


def test_add_call_with_passed_args_only():
    s = get_tf_spec("Add")
    assert [a.name for a in s.args if a.passed] == ["x", "y"]
    out = call_from_spec(s, {"x": tf.constant([1.0, 2.0], tf.float32),
                             "y": tf.constant([0.5, 0.5], tf.float32)})
    np.testing.assert_allclose(out.numpy(), [1.5, 2.5])


def test_renamed_wrapper_args():
    # Sum's OpDef input "reduction_indices" is the keyword "axis" in tf.raw_ops
    s = get_tf_spec("Sum")
    assert s.arg("axis").kind == TENSOR and s.arg("axis").dtype_ref == "Tidx"
    assert s.notes["opdef_names"] == {"axis": "reduction_indices"}
    tidx = s.arg("Tidx")
    assert tidx.passed is False and tidx.default == "int32" and set(tidx.allowed) == {"int32", "int64"}
    out = call_from_spec(s, {"input": tf.ones([2, 3]), "axis": tf.constant(1), "keep_dims": True})
    assert out.shape == (2, 1)
    # Squeeze renames an attr (squeeze_dims -> axis)
    sq = get_tf_spec("Squeeze")
    assert sq.arg("axis").kind == INT_LIST and sq.arg("axis").default == []
    assert call_from_spec(sq, {"input": tf.ones([1, 3, 1]), "axis": [0]}).shape == (3, 1)


def test_type_list_input_and_shape_attr():
    s = get_tf_spec("IdentityN")
    inp = s.arg("input")
    assert inp.kind == TENSOR_LIST and inp.dtype_ref is None and "string" in inp.dtypes
    assert s.arg("T").kind == DTYPE_LIST and s.arg("T").passed is False
    out = call_from_spec(s, {"input": [tf.constant(1), tf.constant("a")]})
    assert [o.dtype for o in out] == [tf.int32, tf.string]
    ph = get_tf_spec("PlaceholderWithDefault")
    assert ph.arg("shape").kind == SHAPE and ph.arg("dtype").passed is False


def test_fixed_type_input_and_float_default():
    s = get_tf_spec("QuantizeV2")  # float inputs, quantized-only output type
    assert s.arg("input").dtypes == ["float32"]
    assert s.unsupported == "quantized dtype"
    assert s.arg("ensure_minimum_range").default == 0.01  # float32 default decoded cleanly


def test_unsupported_reasons(specs):
    assert get_tf_spec("ReadVariableOp").unsupported == "resource input"
    assert get_tf_spec("AssignAdd").unsupported == "ref input"
    assert get_tf_spec("TensorListLength").unsupported == "variant input"
    assert get_tf_spec("VariableV2").unsupported == "ref output"
    assert get_tf_spec("StatelessWhile").unsupported == "func attr"
    assert get_tf_spec("Const").unsupported == "tensor attr"
    # every unsupported spec still describes its arguments
    assert get_tf_spec("ReadVariableOp").has_arg("resource")


def test_unknown_name_suggests():
    with pytest.raises(UnknownApiError) as ei:
        get_tf_spec("tf.raw_ops.Conv2d")
    msg = str(ei.value)
    assert "\n" not in msg and "tf.raw_ops.Conv2D" in msg and "Conv2d" in msg
    assert isinstance(ei.value, UserError)
    with pytest.raises(UnknownApiError):
        get_tf_spec("NoSuchOpAtAllXyz")


def test_counts(specs):
    public = [n for n in dir(tf.raw_ops) if not n.startswith("_")]
    c = spec_counts(specs)
    assert c["total"] == len(public) == len(specs)
    assert c["supported"] > 0.5 * c["total"]
    assert c["supported"] + c["unsupported"] == c["total"]
    reasons = dict(c["reasons"])
    assert reasons["resource input"] > 50 and "ref input" in reasons
    assert sum(reasons.values()) <= c["unsupported"]
    assert load_tf_specs() is not specs and load_tf_specs()["tf.raw_ops.Add"] is specs["tf.raw_ops.Add"]


def test_every_spec_is_consistent_with_its_wrapper(specs):
    """For every op: the passed args are exactly the wrapper's keywords (minus
    omitted defaulted attrs), in signature order; refs point at inferred
    args of the right kind; dtype sets use canonical names."""
    for key, s in specs.items():
        assert key == s.name and s.name.startswith("tf.raw_ops.")
        params = [p for p in inspect.signature(getattr(tf.raw_ops, s.name[11:])).parameters
                  if p != "name"]
        omitted = set(s.notes.get("omitted_attrs", []))
        if s.supported:
            assert [a.name for a in s.args if a.passed] == [p for p in params if p not in omitted], key
        for a in s.args:
            if a.dtype_ref:
                ref = s.arg(a.dtype_ref)
                assert ref.kind == DTYPE and not ref.passed, key
            if a.length_ref:
                ref = s.arg(a.length_ref)
                assert ref.kind == INT and not ref.passed, key
            if a.kind in (TENSOR, TENSOR_LIST):
                assert (a.dtype_ref is None) != (a.dtypes is None), key
                assert a.dtypes is None or (a.dtypes and set(a.dtypes) <= set(ALL_DTYPES)), key
            if a.kind in (DTYPE, DTYPE_LIST):
                assert a.allowed and set(a.allowed) <= set(ALL_DTYPES), key
                if s.supported and a.has_default and a.kind == DTYPE:
                    assert a.default in ALL_DTYPES, key
        assert ApiSpec.from_dict(s.to_dict()).to_dict() == s.to_dict()


def test_decode_attr_defaults():
    from tensorflow.core.framework import attr_value_pb2, tensor_shape_pb2, types_pb2
    av = attr_value_pb2.AttrValue(type=types_pb2.DT_HALF)
    assert decode_attr_value(av, "type") == "float16"
    av = attr_value_pb2.AttrValue(type=types_pb2.DT_QINT8)
    assert decode_attr_value(av, "type") == "DT_QINT8"
    shp = tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=-1),
                                                 tensor_shape_pb2.TensorShapeProto.Dim(size=3)])
    assert decode_attr_value(attr_value_pb2.AttrValue(shape=shp), "shape") == [-1, 3]
    unk = tensor_shape_pb2.TensorShapeProto(unknown_rank=True)
    assert decode_attr_value(attr_value_pb2.AttrValue(shape=unk), "shape") is None
    lst = attr_value_pb2.AttrValue(list=attr_value_pb2.AttrValue.ListValue(s=[b"a", b"bc"]))
    assert decode_attr_value(lst, "list(string)") == ["a", "bc"]
    lst = attr_value_pb2.AttrValue(list=attr_value_pb2.AttrValue.ListValue(f=[0.1, 2.5]))
    assert decode_attr_value(lst, "list(float)") == [0.1, 2.5]


def test_spec_cache_serves_a_process_that_never_imports_tensorflow(tmp_path, monkeypatch):
    """The built spec table is cached as JSON; a fresh process reads it back
    (the same specs) without importing TensorFlow, and a corrupt file is
    rebuilt from the registry."""
    import json
    import subprocess
    import sys

    from acetest_ml.spec.tensorflow import (_read_spec_cache, _write_spec_cache, build_tf_specs,
                                            spec_cache_path)
    monkeypatch.setenv("ACETEST_ML_CACHE_DIR", str(tmp_path))
    path = spec_cache_path()
    assert path is not None and path.parent == tmp_path
    built = build_tf_specs()
    _write_spec_cache(path, built)
    assert _read_spec_cache(path) == built
    probe = ("import sys, json; from acetest_ml.spec import load_specs, get_spec; s = load_specs('tf'); "
             "print(json.dumps([len(s), get_spec('tf.raw_ops.Conv2D').to_dict(), 'tensorflow' in sys.modules]))")
    env = dict(os.environ, ACETEST_ML_CACHE_DIR=str(tmp_path))

    def run():
        out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True,
                             timeout=300, check=True).stdout
        return json.loads(out.strip().splitlines()[-1])

    n, conv, imported = run()
    assert (n, conv, imported) == (len(built), built["tf.raw_ops.Conv2D"].to_dict(), False)
    path.write_text('{"format": 1, "specs": [{"name": "tf.raw_ops.Conv2D"')  # cut short
    assert _read_spec_cache(path) is None
    n, conv, imported = run()
    assert (n, imported) == (len(built), True)
    assert _read_spec_cache(path) == built  # rewritten
    # another oneDNN switch (other CPU kernels may register) is another file
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0" if os.environ.get("TF_ENABLE_ONEDNN_OPTS") == "1" else "1")
    assert spec_cache_path() != path
