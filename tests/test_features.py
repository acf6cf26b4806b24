"""Feature schema: layout, relational features, fixed width, JSON round trip."""
import json
import math

import numpy as np
import pytest

from acetest_ml.errors import UserError
from acetest_ml.features import (FEATURE_VERSION, MAX_FEATURES, FeatureSchema,
                                 SchemaMismatchError)
from acetest_ml.model import (BOOL, DTYPE, DTYPE_CODE, INT, INT_LIST, STR, TENSOR, TENSOR_LIST,
                              AbstractInput, ApiSpec, ArgSpec, DTypeValue, TensorDesc)

TF_T = ["float16", "bfloat16", "float32", "float64", "int32"]


def tf_conv2d_spec():
    return ApiSpec(name="tf.raw_ops.Conv2D", framework="tf", args=[
        ArgSpec("input", TENSOR, dtypes=TF_T, dtype_ref="T", min_rank=4, max_rank=4),
        ArgSpec("filter", TENSOR, dtypes=TF_T, dtype_ref="T", min_rank=4, max_rank=4),
        ArgSpec("strides", INT_LIST),
        ArgSpec("padding", STR, allowed=["SAME", "VALID", "EXPLICIT"]),
        ArgSpec("use_cudnn_on_gpu", BOOL, has_default=True, default=True),
        ArgSpec("explicit_paddings", INT_LIST, has_default=True, default=[]),
        ArgSpec("data_format", STR, allowed=["NHWC", "NCHW"], has_default=True, default="NHWC"),
        ArgSpec("dilations", INT_LIST, has_default=True, default=[1, 1, 1, 1]),
        ArgSpec("T", DTYPE, allowed=TF_T, passed=False),
    ])


def torch_conv2d_spec():
    return ApiSpec(name="torch.ops.aten.conv2d.default", framework="torch", args=[
        ArgSpec("input", TENSOR, dtypes=["float32", "float64"], min_rank=3, max_rank=4),
        ArgSpec("weight", TENSOR, dtypes=["float32", "float64"], min_rank=4, max_rank=4),
        ArgSpec("bias", TENSOR, dtypes=["float32", "float64"], min_rank=1, max_rank=1,
                optional=True),
        ArgSpec("stride", INT_LIST, length=2, has_default=True, default=[1, 1]),
        ArgSpec("padding", INT_LIST, length=2, has_default=True, default=[0, 0]),
        ArgSpec("dilation", INT_LIST, length=2, has_default=True, default=[1, 1]),
        ArgSpec("groups", INT, has_default=True, default=1, minimum=1),
    ])


def conv_input(ishape, fshape, strides=(1, 1, 1, 1), padding="SAME", dtype="float32", **extra):
    args = {"input": TensorDesc(dtype, tuple(ishape), low=-1.0, high=1.0),
            "filter": TensorDesc(dtype, tuple(fshape)),
            "strides": list(strides), "padding": padding, "T": DTypeValue(dtype)}
    args.update(extra)
    return AbstractInput("tf.raw_ops.Conv2D", args)


def feats(schema, ai):
    return dict(zip(schema.names, schema.vector(ai).tolist()))


@pytest.fixture(scope="module")
def conv():
    return FeatureSchema.for_spec(tf_conv2d_spec())


def test_layout_fields_and_bounds(conv):
    assert conv.version == FEATURE_VERSION
    assert conv.api == "tf.raw_ops.Conv2D"
    assert len(conv.names) == len(set(conv.names)) == conv.width
    assert 50 < conv.width <= MAX_FEATURES
    assert len(conv.spec_fingerprint) == 16
    # building twice gives the same layout
    again = FeatureSchema.for_spec(tf_conv2d_spec())
    assert again.names == conv.names and again.spec_fingerprint == conv.spec_fingerprint


def test_base_tensor_features(conv):
    f = feats(conv, conv_input((2, 8, 7, 3), (3, 3, 3, 16)))
    assert f["input.present"] == 1 and f["input.rank"] == 4
    assert [f[f"input.d{i}"] for i in range(4)] == [2, 8, 7, 3]
    assert f["input.numel"] == 2 * 8 * 7 * 3
    assert f["input.log_numel"] == pytest.approx(math.log1p(336), rel=1e-6)
    assert f["input.dtype"] == DTYPE_CODE["float32"]
    assert f["input.low"] == -1.0 and f["input.high"] == 1.0
    assert math.isnan(f["filter.low"])
    assert f["input.zero_dims"] == 0
    assert f["T"] == DTYPE_CODE["float32"]
    assert f["input.dtype==$T"] == 1
    assert f["padding"] == 0  # index of "SAME" in allowed
    assert f["strides.len"] == 4 and f["strides[0]"] == 1 and math.isnan(f["strides[4]"])
    assert f["strides.prod"] == 1 and f["strides.max"] == 1
    # omitted defaulted argument: present flag 0, values missing
    assert f["explicit_paddings.present"] == 0 and math.isnan(f["explicit_paddings.len"])

    g = feats(conv, conv_input((2, 0, 7, 3), (3, 3, 3, 16), padding="EXPLICIT",
                               dtype="float64", explicit_paddings=[0, 0, 1, 1, 2, 2, 0, 0]))
    assert g["input.zero_dims"] == 1 and g["input.numel"] == 0
    assert g["padding"] == 2
    assert g["input.dtype"] == DTYPE_CODE["float64"]
    assert g["explicit_paddings.present"] == 1 and g["explicit_paddings.len"] == 8
    assert g["explicit_paddings.max"] == 2
    assert g["explicit_paddings~input.len==2*rank"] == 1


def test_channel_equality_feature(conv):
    name = "input~filter.d3==d2"
    assert name in conv.names
    assert feats(conv, conv_input((1, 8, 8, 3), (3, 3, 3, 16)))[name] == 1
    assert feats(conv, conv_input((1, 8, 8, 4), (3, 3, 3, 16)))[name] == 0
    # divisibility (grouped convolution: input channels divisible by filter's)
    f = feats(conv, conv_input((1, 8, 8, 6), (3, 3, 3, 16)))
    assert f[name] == 0 and f["input~filter.d3%d2==0"] == 1
    f = feats(conv, conv_input((1, 8, 8, 7), (3, 3, 3, 16)))
    assert f["input~filter.d3%d2==0"] == 0


def test_list_length_vs_rank(conv):
    f = feats(conv, conv_input((1, 8, 8, 3), (3, 3, 3, 16), strides=(1, 2, 2, 1)))
    assert f["strides~input.len==rank"] == 1
    assert f["strides~input.len==rank-2"] == 0
    f = feats(conv, conv_input((1, 8, 8, 3), (3, 3, 3, 16), strides=(2, 2)))
    assert f["strides~input.len==rank"] == 0
    assert f["strides~input.len==rank-2"] == 1
    # rank-3 input: strides of length 4 no longer match its rank
    f = feats(conv, conv_input((8, 8, 3), (3, 3, 3, 16), strides=(1, 2, 2, 1)))
    assert f["strides~input.len==rank"] == 0


def test_fixed_width_across_ranks(conv):
    shapes = [(), (5,), (1, 8, 8, 3), (2, 3, 4, 5, 6, 7, 8, 9)]
    vecs = [conv.vector(conv_input(s, (3, 3, 3, 16))) for s in shapes]
    assert all(v.shape == (conv.width,) and v.dtype == np.float32 for v in vecs)
    i_rank = conv.names.index("input.rank")
    assert [v[i_rank] for v in vecs] == [0, 1, 4, 8]
    f = dict(zip(conv.names, vecs[1].tolist()))
    assert f["input.d0"] == 5 and f["input.d1"] == -1 and f["input.d3"] == -1
    # the channel relation does not apply when the input has no dim 3
    assert math.isnan(f["input~filter.d3==d2"])
    # rank 8 (beyond max_rank): numel still counts every dimension
    f = dict(zip(conv.names, vecs[3].tolist()))
    assert f["input.numel"] == math.prod(range(2, 10))
    # trailing dims are used for the end-aligned relations
    assert f["input~filter.last_eq"] == 0
    # absent tensor: present 0, rank missing, dims -1
    v = conv.vector(AbstractInput("tf.raw_ops.Conv2D", {"filter": TensorDesc("float32", (1,))}))
    f = dict(zip(conv.names, v.tolist()))
    assert f["input.present"] == 0 and math.isnan(f["input.rank"]) and f["input.d0"] == -1


def test_matrix_matches_vectors(conv):
    ais = [conv_input((1, n, n, c), (3, 3, c if n % 2 else c + 1, 8), strides=(1, n % 3 + 1, 1, 1))
           for n in range(1, 9) for c in (1, 3)]
    M = conv.matrix(ais)
    assert M.shape == (len(ais), conv.width) and M.dtype == np.float32
    for i, ai in enumerate(ais):
        np.testing.assert_array_equal(M[i], conv.vector(ai))
    assert conv.matrix([]).shape == (0, conv.width)


def test_torch_conv_groups_and_stride_relations():
    s = FeatureSchema.for_spec(torch_conv2d_spec())
    assert s.width <= MAX_FEATURES
    ai = AbstractInput(s.api, {"input": TensorDesc("float32", (1, 4, 9, 9)),
                               "weight": TensorDesc("float32", (8, 2, 3, 3)),
                               "stride": [1, 1], "groups": 2})
    f = feats(s, ai)
    assert f["input.d1%groups==0"] == 1
    assert f["weight.d0%groups==0"] == 1
    assert f["stride~input.len==rank-2"] == 1 and f["stride~input.len==rank"] == 0
    assert f["bias.present"] == 0
    assert f["input~weight.rank_eq"] == 1
    # fixed-length list: only as many item features as the spec allows
    assert "stride[1]" in s.names and "stride[2]" not in s.names
    ai.args["groups"] = 3
    assert feats(s, ai)["input.d1%groups==0"] == 0
    ai.args["groups"] = 0  # divisor zero: relation does not apply
    assert math.isnan(feats(s, ai)["input.d1%groups==0"])
    ai.args["groups"] = None  # scalar None -> NaN
    f = feats(s, ai)
    assert math.isnan(f["groups"]) and f["groups.present"] == 0


def test_axis_scalar_relative_to_rank():
    spec = ApiSpec("torch.ops.aten.transpose.int", "torch", args=[
        ArgSpec("self", TENSOR), ArgSpec("dim0", INT), ArgSpec("dim1", INT)])
    s = FeatureSchema.for_spec(spec)

    def f(d0):
        return feats(s, AbstractInput(spec.name, {"self": TensorDesc("float32", (2, 3, 4)),
                                                  "dim0": d0, "dim1": 0}))
    assert f(-3)["dim0~self.in[-rank,rank)"] == 1 and f(-3)["dim0~self.<rank"] == 1
    assert f(2)["dim0~self.in[-rank,rank)"] == 1
    assert f(3)["dim0~self.in[-rank,rank)"] == 0 and f(3)["dim0~self.<rank"] == 0
    assert f(-4)["dim0~self.in[-rank,rank)"] == 0
    assert f(3)["dim0~self.==rank"] == 1
    # equal dims within one tensor
    g = feats(s, AbstractInput(spec.name, {"self": TensorDesc("float32", (4, 3, 4)),
                                           "dim0": 0, "dim1": 1}))
    assert g["self.d0==d2"] == 1 and g["self.d0==d1"] == 0


def test_broadcast_and_same_shape():
    spec = ApiSpec("torch.ops.aten.add.Tensor", "torch", args=[
        ArgSpec("self", TENSOR), ArgSpec("other", TENSOR)])
    s = FeatureSchema.for_spec(spec)

    def f(a, b):
        return feats(s, AbstractInput(spec.name, {"self": TensorDesc("float32", a),
                                                  "other": TensorDesc("float32", b)}))
    assert f((3, 1, 5), (4, 5))["self~other.broadcastable"] == 1
    assert f((3, 2), (4, 2))["self~other.broadcastable"] == 0
    assert f((3, 2), (4, 2))["self~other.t2_bcast"] == 0
    assert f((3, 2), (4, 2))["self~other.t1_eq"] == 1
    assert f((2, 3), (2, 3))["self~other.same_shape"] == 1
    assert f((2, 3), (2, 3, 1))["self~other.same_shape"] == 0
    assert f((2, 3), (3,))["self~other.rank_diff"] == 1


def test_int_tensor_values_relations():
    spec = ApiSpec("tf.raw_ops.Reshape", "tf", args=[
        ArgSpec("tensor", TENSOR, dtypes=["float32"]),
        ArgSpec("shape", TENSOR, dtypes=["int32", "int64"], min_rank=1, max_rank=1)])
    s = FeatureSchema.for_spec(spec)

    def f(vals):
        return feats(s, AbstractInput(spec.name, {
            "tensor": TensorDesc("float32", (2, 3, 4)),
            "shape": TensorDesc("int32", (len(vals),), values=tuple(vals))}))
    assert f([6, 4])["shape.values~tensor.prod==numel"] == 1
    assert f([5, 4])["shape.values~tensor.prod==numel"] == 0
    assert f([6, 4])["shape.nvals"] == 2 and f([6, 4])["shape.v1"] == 4


def test_tensor_list_features():
    spec = ApiSpec("tf.raw_ops.ConcatV2", "tf", args=[
        ArgSpec("values", TENSOR_LIST, dtypes=["float32"], length_ref="N", min_length=2),
        ArgSpec("axis", TENSOR, dtypes=["int32"], max_rank=0),
        ArgSpec("N", INT, minimum=2, passed=False)])
    s = FeatureSchema.for_spec(spec)
    vals = [TensorDesc("float32", (2, 3)), TensorDesc("float32", (2, 5))]
    f = feats(s, AbstractInput(spec.name, {"values": vals, "N": 2,
                                           "axis": TensorDesc("int32", (), values=(1,))}))
    assert f["values.len"] == 2 and f["values.len==$N"] == 1
    assert f["values.same_rank"] == 1 and f["values.same_shape"] == 0
    assert f["values[0].d0"] == 2 and f["values[1].d1"] == 5
    assert f["values[0]~values[1].d0==d0"] == 1 and f["values[0]~values[1].d1==d1"] == 0
    f = feats(s, AbstractInput(spec.name, {"values": vals + vals, "N": 3}))
    assert f["values.len==$N"] == 0 and f["values.len"] == 4


def test_width_bounded_for_large_specs():
    args = [ArgSpec(f"t{i}", TENSOR) for i in range(12)]
    args += [ArgSpec(f"l{i}", INT_LIST) for i in range(6)]
    args += [ArgSpec(f"k{i}", INT) for i in range(6)]
    spec = ApiSpec("x.big", "torch", args=args)
    s = FeatureSchema.for_spec(spec)
    assert s.width == MAX_FEATURES
    ai = AbstractInput(spec.name, {f"t{i}": TensorDesc("float32", (2,) * (i % 7)) for i in range(12)})
    assert s.vector(ai).shape == (MAX_FEATURES,)


def test_garbage_values_do_not_raise(conv):
    ai = AbstractInput("tf.raw_ops.Conv2D", {"input": 5, "filter": [1, 2], "strides": "abc",
                                             "padding": "NOPE", "T": "float32",
                                             "dilations": 3})
    f = feats(conv, ai)
    assert f["input.present"] == 0 and f["padding"] == -1
    assert f["T"] == DTYPE_CODE["float32"]
    assert f["dilations.len"] == 1 and f["dilations[0]"] == 3


def test_json_round_trip_and_compatibility(conv):
    doc = json.loads(json.dumps(conv.to_json()))
    back = FeatureSchema.from_json(doc)
    assert back.names == conv.names and back.spec_fingerprint == conv.spec_fingerprint
    ai = conv_input((1, 8, 8, 3), (3, 3, 3, 16))
    np.testing.assert_array_equal(back.vector(ai), conv.vector(ai))
    conv.check_compatible(back)

    # a spec change that alters the features changes the fingerprint
    spec2 = tf_conv2d_spec()
    spec2.arg("padding").allowed = ["SAME", "VALID"]
    other = FeatureSchema.for_spec(spec2)
    assert other.names == conv.names and other.spec_fingerprint != conv.spec_fingerprint
    with pytest.raises(SchemaMismatchError, match="fingerprint"):
        conv.check_compatible(other)
    spec3 = tf_conv2d_spec()
    spec3.args.append(ArgSpec("extra", INT))
    with pytest.raises(SchemaMismatchError, match="fingerprint"):
        conv.check_compatible(FeatureSchema.for_spec(spec3))
    spec4 = tf_conv2d_spec()
    spec4.name = "tf.raw_ops.Conv3D"
    with pytest.raises(SchemaMismatchError, match="Conv3D"):
        conv.check_compatible(FeatureSchema.for_spec(spec4))
    old = dict(doc, version=FEATURE_VERSION - 1)
    detached = FeatureSchema.from_json(old)
    with pytest.raises(SchemaMismatchError, match="feature version"):
        conv.check_compatible(detached)
    with pytest.raises(SchemaMismatchError):
        detached.vector(ai)
    # JSON whose names disagree with what the spec builds now is refused
    with pytest.raises(SchemaMismatchError):
        FeatureSchema.from_json(dict(doc, names=doc["names"][:-1]))
    with pytest.raises(SchemaMismatchError, match="malformed"):
        FeatureSchema.from_json({"api": "x"})
    assert issubclass(SchemaMismatchError, UserError)
