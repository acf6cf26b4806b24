"""Each message family learned from a real message of a real op: the op is
called with an input that breaks the constraint, the message it raises is
turned into a rule, and the solver's next samples satisfy the rule."""
import pytest

from acetest_ml.execute.supervisor import Executor
from acetest_ml.learn.evaluate import holds
from acetest_ml.learn.patterns import candidates_from_message, load_families
from acetest_ml.model import AbstractInput, DTypeValue, TensorDesc
from acetest_ml.solve.registry import RegistryProblem
from acetest_ml.solve.sampler import Sampler
from acetest_ml.spec import get_spec


def T(dtype, *shape, values=None):
    return TensorDesc(dtype, tuple(shape), 0, 3, values)


# family -> (api, arguments of a failing call, the rule expected)
CASES = {
    "scalar": ("tf.raw_ops.MatrixBandPart",
               dict(input=T("float32", 3, 3), num_lower=T("int64", 2), num_upper=T("int64")),
               "num_lower.rank == 0"),
    "vector": ("tf.raw_ops.BiasAdd", dict(value=T("float32", 2, 3), bias=T("float32", 3, 1)),
               "bias.rank == 1"),
    "rank_ge": ("tf.raw_ops.BiasAdd", dict(value=T("float32", 3), bias=T("float32", 3)),
                "value.rank >= 2"),
    "matrix": ("torch.ops.aten.mm", dict(self=T("float32", 2, 3, 1), mat2=T("float32", 3, 2)),
               "self.rank == 2"),
    "rank_in": ("torch.ops.aten.conv2d", dict(input=T("float32", 3, 3), weight=T("float32", 2, 3, 1, 1)),
                "input.rank in (3, 4)"),
    "rank_eq": ("tf.raw_ops.EncodeJpeg", dict(image=T("uint8", 2, 2)), "image.rank == 3"),
    "list_length": ("tf.raw_ops.AvgPool", dict(value=T("float64", 5, 3, 4, 3, 2), ksize=[1, 3, 4, 2],
                                               strides=[1, 1, 2, 4, 1], padding="VALID"),
                    "len(strides) == 4"),
    "list_length_ge": ("tf.raw_ops.MaxPool", dict(input=T("float32", 1, 4, 4, 1), ksize=[1, 2, 1],
                                                  strides=[1, 1, 1, 1], padding="VALID"),
                       "len(ksize) >= 4"),
    "batch_and_depth_one": ("tf.raw_ops.Conv2D",
                            dict(input=T("float32", 2, 4, 4, 1), filter=T("float32", 1, 1, 1, 2),
                                 strides=[2, 1, 1, 1], padding="VALID"),
                            "strides[0] == 1 and strides[-1] == 1"),
    "depth_one": ("tf.raw_ops.AvgPoolGrad", dict(orig_input_shape=T("int32", 4, values=(1, 4, 4, 2)),
                                              grad=T("float32", 1, 4, 4, 1), ksize=[1, 1, 1, 2],
                                              strides=[1, 1, 1, 1], padding="VALID"),
                  "ksize[-1] == 1"),  # upstream runs TF with oneDNN off (cpu_ori): its message
    "list_empty": ("tf.raw_ops.Conv2D",
                   dict(input=T("float64", 1, 7, 2), filter=T("float64", 2, 8),
                        strides=[1, 1, 4, 1], padding="VALID", explicit_paddings=[3, 3, 3],
                        data_format="NCHW"),
                   "len(explicit_paddings) == 0"),
    "dim_named_size": ("tf.raw_ops.LSTMBlockCell",
                       dict(x=T("float32", 2, 3), cs_prev=T("float32", 1, 4), h_prev=T("float32", 2, 4),
                            w=T("float32", 7, 16), wci=T("float32", 4), wcf=T("float32", 4),
                            wco=T("float32", 4), b=T("float32", 16)),
                       "cs_prev.dim[0] == "),
    "same_batch": ("tf.raw_ops.CombinedNonMaxSuppression",
                   dict(boxes=T("float32", 2, 3, 1, 4), scores=T("float32", 3, 3, 2),
                        max_output_size_per_class=T("int32", values=(2,)), max_total_size=T("int32", values=(4,)),
                        iou_threshold=T("float32", values=(0.5,)), score_threshold=T("float32", values=(0.0,))),
                   "boxes.dim[0] == scores.dim[0]"),
    "same_shape": ("tf.raw_ops.ApproximateEqual", dict(x=T("float32", 2, 3), y=T("float32", 3)),
                   "x.rank == y.rank and x.dim[0] == y.dim[0]"),
    "matmul_inner": ("torch.ops.aten.mm", dict(self=T("float32", 2, 3), mat2=T("float32", 4, 2)),
                     "self.dim[-1] == mat2.dim[-2]"),
    "square": ("tf.raw_ops.Cholesky", dict(input=T("float32", 2, 3)), "input.dim[-1] == input.dim[-2]"),
    "bool_exclusive": ("tf.raw_ops.ResizeBilinear",
                       dict(images=T("float32", 1, 2, 2, 1), size=T("int32", 2, values=(3, 3)),
                            align_corners=True, half_pixel_centers=True),
                       "not (half_pixel_centers and align_corners)"),
    "output_dims_positive": ("tf.raw_ops.ResizeBilinear",
                             dict(images=T("float32", 1, 2, 2, 1), size=T("int32", 2, values=(0, 3))),
                             "size[0] >= 1"),
    "shape_dims_nonnegative": ("tf.raw_ops.Conv2DBackpropFilter",
                               dict(input=T("float32", 1, 4, 4, 1), filter_sizes=T("int32", 4, values=(2, -1, 1, 1)),
                                    out_backprop=T("float32", 1, 3, 4, 1), strides=[1, 1, 1, 1], padding="VALID"),
                               "filter_sizes[0] >= 0"),
    "int_in_set": ("tf.raw_ops.DecodeAndCropJpeg",
                   dict(contents=TensorDesc("string", ()), crop_window=T("int32", 4), channels=2),
                   "channels in (0, 1, 3, 4)"),
    "int_positive": ("torch.ops.aten.conv2d",
                     dict(input=T("float32", 1, 2, 4, 4), weight=T("float32", 2, 2, 1, 1), groups=0),
                     "groups > 0"),
    "axis_in_rank": ("torch.ops.aten.softmax.int", dict(self=T("float32", 2, 3), dim=4),
                     "-self.rank <= dim and dim < self.rank"),
    # contents: the range a float tensor is filled from
    "values_between": ("torch.ops.aten.binary_cross_entropy",
                       dict(self=TensorDesc("float32", (2, 3), -1.0, 1.0),
                            target=TensorDesc("float32", (2, 3), 0.0, 1.0)),
                       "self.low >= 0 and self.high <= 1"),
    # no argument holds the index: the 1-d tensor needs a third dimension
    "rank_for_index": ("torch.ops.aten.addbmm",
                       dict(self=T("float32", 2, 2), batch1=T("float32", 2, 3, 4), batch2=T("float32", 5)),
                       "batch2.rank >= 3"),
    # values of small int tensors, decided by the solver once a rule names them
    "value_le_rows": ("tf.raw_ops.MatrixBandPart",
                      dict(input=T("float32", 2, 3), num_lower=T("int64", values=(5,)),
                           num_upper=T("int64", values=(0,))),
                      "num_lower.value <= input.dim[-2]"),
    # (ArgMax, not Cumsum: the ACETest-data tests read Cumsum's axis as an int)
    "value_in_rank": ("tf.raw_ops.ArgMax", dict(input=T("float32", 2, 3), dimension=T("int32", values=(3,))),
                      "-input.rank <= dimension.value and dimension.value < input.rank"),
    "dim0_match": ("tf.raw_ops.SegmentSum", dict(data=T("float32", 4, 2), segment_ids=T("int32", 3, values=(0, 0, 1))),
                   "segment_ids.dim[0] == data.dim[0]"),
    "dtype_not": ("torch.ops.aten._adaptive_avg_pool3d", dict(self=T("int32", 2, 3, 3, 3), output_size=[1, 1, 1]),
                  "self.dtype != 'int32'"),
    # families added from the coverage samples (benchmarks/learned_blockers.md)
    "dtype_is": ("torch.ops.aten.linalg_lu_solve",
                 dict(LU=T("float32", 3, 3), pivots=T("float32", 3), B=T("float32", 3, 1)),
                 "pivots.dtype == 'int32'"),
    "int_lt_rank": ("tf.raw_ops.ReverseSequence",
                    dict(input=T("float32", 2, 3), seq_lengths=T("int64", 2, values=(1, 1)), seq_dim=2, batch_dim=0),
                    "seq_dim < input.rank"),
    "int_distinct": ("tf.raw_ops.ReverseSequence",
                     dict(input=T("float32", 2, 3), seq_lengths=T("int64", 2, values=(1, 1)), seq_dim=0, batch_dim=0),
                     "batch_dim != seq_dim"),
    "same_outer_all": ("tf.raw_ops.MatrixSolve", dict(matrix=T("float32", 2, 3, 3), rhs=T("float32", 4, 3, 1)),
                       "matrix.rank == rhs.rank and (matrix.rank < 3 or matrix.dim[0] == rhs.dim[0])"),
    "len_is_dim1": ("tf.raw_ops.SparseFillEmptyRows",
                    dict(indices=T("int64", 2, 1, values=(0, 1)), values=T("float32", 2),
                         dense_shape=T("int64", 2, values=(3, 3)), default_value=T("float32")),
                    "dense_shape.dim[0] == indices.dim[1]"),
    "cols_is_len": ("tf.raw_ops.SparseTensorDenseMatMul",
                    dict(a_indices=T("int64", 2, 3, values=(0,) * 6), a_values=T("float32", 2),
                         a_shape=T("int64", 2, values=(2, 2)), b=T("float32", 2, 2)),
                    "a_indices.dim[1] == a_shape.dim[0]"),
    "rows_const": ("tf.raw_ops.TridiagonalSolve", dict(diagonals=T("float32", 2, 3), rhs=T("float32", 3, 1)),
                   "diagonals.rank >= 2 and diagonals.dim[-2] == 3"),
    "value_ge": ("tf.raw_ops.NonMaxSuppressionV5",
                 dict(boxes=T("float32", 3, 4), scores=T("float32", 3), max_output_size=T("int32", values=(2,)),
                      iou_threshold=T("float32", values=(0.5,)), score_threshold=T("float32", values=(0.0,)),
                      soft_nms_sigma=T("float32", values=(-1.0,))),
                 "soft_nms_sigma.value >= 0"),
    "size_batch": ("torch.ops.aten.ctc_loss.IntList",
                   dict(log_probs=T("float32", 5, 2, 4), targets=T("int64", 2, 3), input_lengths=[5],
                        target_lengths=[3, 3]),
                   "len(input_lengths) == log_probs.dim[1]"),
    "conv_channels": ("torch.ops.aten.conv2d",
                      dict(input=T("float32", 1, 3, 4, 4), weight=T("float32", 2, 2, 1, 1), groups=1),
                      "input.dim[1] == weight.dim[1] * groups"),
    "conv_channels_transposed": ("torch.ops.aten._convolution",
                                 dict(input=T("float32", 1, 3, 4), weight=T("float32", 2, 2, 1), bias=None,
                                      stride=[1], padding=[0], dilation=[1], transposed=True, output_padding=[0],
                                      groups=1, benchmark=False, deterministic=False, cudnn_enabled=False,
                                      allow_tf32=False),
                                 "input.rank == weight.rank and input.dim[1] == weight.dim[0]"),
    "groups_divide": ("torch.ops.aten.conv2d",
                      dict(input=T("float32", 1, 4, 4, 4), weight=T("float32", 3, 2, 1, 1), groups=2),
                      "weight.dim[0] % groups == 0"),
    "rank_as": ("torch.ops.aten._convolution",
                dict(input=T("float32", 4), weight=T("float32", 2, 1, 1), bias=None, stride=[1], padding=[0],
                     dilation=[1], transposed=False, output_padding=[0], groups=1, benchmark=False,
                     deterministic=False, cudnn_enabled=False, allow_tf32=False),
                "input.rank == weight.rank"),
    "first_value": ("tf.raw_ops.RaggedCountSparseOutput",
                    dict(splits=T("int64", 3, values=(1, 2, 4)), values=T("int64", 4, values=(0, 1, 2, 1)),
                         weights=T("float32", 4), binary_output=False),
                    "splits[0] == 0"),
    "dims_from_list": ("torch.ops.aten.slow_conv_dilated3d",
                       dict(self=T("float32", 1, 1, 4, 4, 4), weight=T("float32", 1, 1, 3, 1, 1),
                            kernel_size=[1, 1, 1]),
                       "(len(kernel_size) <= 0 or weight.dim[2] == kernel_size[0])"),
    "nhwc_only": ("tf.raw_ops.AvgPool", dict(value=T("float32", 1, 1, 4, 4), ksize=[1, 1, 2, 2],
                                             strides=[1, 1, 1, 1], padding="VALID", data_format="NCHW"),
                  "data_format == 'NHWC'"),
    "ndhwc_only": ("tf.raw_ops.AvgPool3D", dict(input=T("float32", 1, 1, 4, 4, 4), ksize=[1, 1, 2, 2, 2],
                                                strides=[1, 1, 1, 1, 1], padding="VALID", data_format="NCDHW"),
                   "data_format == 'NDHWC'"),
    "spatial_positive": ("tf.raw_ops.AvgPool", dict(value=T("float32", 1, 4, 4, 1), ksize=[1, -2, 2, 1],
                                                    strides=[1, 1, 1, 1], padding="VALID"),
                         "ksize[1] > 0 and ksize[2] > 0"),
    "spatial_dims": ("tf.raw_ops.AvgPool", dict(value=T("float32", 4, 4), ksize=[1, 1, 1, 1],
                                                strides=[1, 1, 1, 1], padding="VALID"),
                     "value.rank == 2 + 2"),
    "spatial_dilation_one": ("tf.raw_ops.Conv2DBackpropInput",
                             dict(input_sizes=T("int32", 4, values=(1, 4, 4, 1)), filter=T("float32", 1, 1, 1, 1),
                                  out_backprop=T("float32", 1, 4, 4, 1), strides=[1, 1, 1, 1], padding="SAME",
                                  dilations=[1, 2, 2, 1]),
                             "dilations[1] == 1 and dilations[2] == 1"),
    "both_rank_eq": ("tf.raw_ops.MatMul", dict(a=T("float32", 2, 2, 2), b=T("float32", 2, 2, 2)),
                     "a.rank == 2 and b.rank == 2"),
    # values of small int tensors (perm, paddings, begin / size, shapes given as tensors)
    "sizes_vector_length": ("tf.raw_ops.Conv2DBackpropFilter",
                            dict(input=T("float32", 1, 4, 4, 1), filter_sizes=T("int32", 3, values=(1, 1, 1)),
                                 out_backprop=T("float32", 1, 4, 4, 1), strides=[1, 1, 1, 1], padding="VALID"),
                            "filter_sizes.rank == 1 and filter_sizes.dim[0] == 4"),
    "sizes_vector_length_in": ("tf.raw_ops.Conv2DBackpropInput",
                               dict(input_sizes=T("int32", 3, values=(1, 4, 4)), filter=T("float32", 1, 1, 1, 1),
                                    out_backprop=T("float32", 1, 4, 4, 1), strides=[1, 1, 1, 1], padding="VALID"),
                               "input_sizes.rank == 1 and input_sizes.dim[0] in (4, 2)"),
    "vector_length_is_rank": ("tf.raw_ops.Transpose", dict(x=T("float32", 2, 3, 4), perm=T("int32", 2, values=(0, 1))),
                              "perm.rank == 1 and perm.dim[0] == x.rank"),
    "permutation": ("tf.raw_ops.Transpose", dict(x=T("float32", 2, 3, 4), perm=T("int32", 3, values=(0, 0, 1))),
                    "perm.rank == 1 and (perm.dim[0] <= 0 or (0 <= perm[0] and perm[0] < x.rank))"),
    "values_nonnegative": ("tf.raw_ops.Pad", dict(input=T("float32", 2, 3), paddings=T("int32", 2, 2, values=(0, -1, 1, 1))),
                           "paddings[0] >= 0 and paddings[1] >= 0"),
    "values_nonzero": ("tf.raw_ops.StridedSlice",
                       dict(input=T("float32", 2, 3), begin=T("int32", 2, values=(0, 0)), end=T("int32", 2, values=(1, 1)),
                            strides=T("int32", 2, values=(0, 1))),
                       "strides[0] != 0 and strides[1] != 0"),
    "items_nonnegative": ("tf.raw_ops.Conv2D", dict(input=T("float32", 1, 4, 4, 1), filter=T("float32", 1, 1, 1, 1),
                                                    strides=[1, 1, 1, 1], padding="EXPLICIT",
                                                    explicit_paddings=[0, 0, -1, 0, 0, 0, 0, 0]),
                          "explicit_paddings[0] >= 0 and explicit_paddings[1] >= 0"),
    "explicit_padding_batch_depth": ("tf.raw_ops.Conv2D",
                                     dict(input=T("float32", 1, 4, 4, 1), filter=T("float32", 1, 1, 1, 1),
                                          strides=[1, 1, 1, 1], padding="EXPLICIT",
                                          explicit_paddings=[1, 0, 0, 0, 0, 0, 0, 0]),
                                     "explicit_paddings[0] == 0 and explicit_paddings[1] == 0"),
    "slice_vectors": ("tf.raw_ops.Slice",
                      dict(input=T("float32", 2, 3, 4), begin=T("int32", 2, values=(0, 0)), size=T("int32", 2, values=(1, 1))),
                      "begin.rank == 1 and size.rank == 1 and begin.dim[0] == input.rank and size.dim[0] == input.rank"),
    "values_in_dims": ("tf.raw_ops.Slice",
                       dict(input=T("float32", 2, 3, 4), begin=T("int32", 3, values=(5, 0, 0)),
                            size=T("int32", 3, values=(1, 1, 1))),
                       "begin[0] >= 0 and begin[0] <= input.dim[0] and begin[1] >= 0"),
    "equal_size_vectors": ("tf.raw_ops.StridedSlice",
                           dict(input=T("float32", 2, 3, 4), begin=T("int32", 2, values=(0, 0)),
                                end=T("int32", 3, values=(1, 1, 1)), strides=T("int32", 2, values=(1, 1))),
                           "begin.rank == 1 and end.rank == 1 and strides.rank == 1 and end.dim[0] == begin.dim[0]"),
    "slice_spec_le_rank": ("tf.raw_ops.StridedSlice",
                           dict(input=T("float32", 2, 3, 4), begin=T("int32", 4, values=(0, 0, 0, 0)),
                                end=T("int32", 4, values=(1, 1, 1, 1)), strides=T("int32", 4, values=(1, 1, 1, 1))),
                           "begin.dim[0] <= input.rank"),
    "single_ellipsis": ("tf.raw_ops.StridedSlice",
                        dict(input=T("float32", 2, 3), begin=T("int32", 2, values=(0, 0)), end=T("int32", 2, values=(1, 1)),
                             strides=T("int32", 2, values=(1, 1)), ellipsis_mask=3),
                        "ellipsis_mask in (0, 1, 2, 4, 8, 16, 32)"),
    "pad_rows_rank": ("tf.raw_ops.Pad", dict(input=T("float32", 2, 3), paddings=T("int32", 3, 2, values=(0, 1, 1, 1, 2, 2))),
                      "paddings.rank == 2 and paddings.dim[1] == 2 and paddings.dim[0] == input.rank"),
    "matrix_columns": ("tf.raw_ops.MirrorPad",
                       dict(input=T("float32", 2, 3, 4), paddings=T("int32", 3, 3, values=(0,) * 9), mode="REFLECT"),
                       "paddings.rank == 2 and paddings.dim[1] == 2"),
    "pad_le_dims": ("tf.raw_ops.MirrorPad",
                    dict(input=T("float32", 2, 3, 4), paddings=T("int32", 3, 2, values=(0, 3, 1, 1, 0, 0)), mode="SYMMETRIC"),
                    "paddings[0] >= 0 and paddings[0] <= input.dim[0] - 0 and paddings[1] >= 0"),
    "pad_lt_dims": ("tf.raw_ops.MirrorPad",
                    dict(input=T("float32", 2, 3, 4), paddings=T("int32", 3, 2, values=(0, 2, 1, 1, 0, 0)), mode="REFLECT"),
                    "paddings[0] >= 0 and paddings[0] <= input.dim[0] - 1 and paddings[1] >= 0"),
    "shape_rows_cols": ("tf.raw_ops.SpaceToBatchND",
                        dict(input=T("float32", 1, 4, 4, 1), block_shape=T("int32", 2, values=(2, 2)),
                             paddings=T("int32", 1, 2, values=(0, 0))),
                        "paddings.rank == 2 and paddings.dim[0] == block_shape.dim[0] and paddings.dim[1] == 2"),
    "rank_ge_length": ("tf.raw_ops.SpaceToBatchND",
                       dict(input=T("float32", 2, 2, 2), block_shape=T("int32", 3, values=(1, 1, 1)),
                            paddings=T("int32", 3, 2, values=(0,) * 6)),
                       "input.rank >= block_shape.dim[0] + 1"),
    "values_in_batch": ("tf.raw_ops.CropAndResize",
                        dict(image=T("float32", 1, 4, 4, 1), boxes=T("float32", 2, 4), box_ind=T("int32", 2, values=(0, 3)),
                             crop_size=T("int32", 2, values=(2, 2))),
                        "0 <= box_ind[0] and box_ind[0] < image.dim[0]"),
    "values_positive": ("tf.raw_ops.CropAndResize",
                        dict(image=T("float32", 1, 4, 4, 1), boxes=T("float32", 2, 4), box_ind=T("int32", 2, values=(0, 0)),
                             crop_size=T("int32", 2, values=(0, 2))),
                        "crop_size[0] >= 1 and crop_size[1] >= 1"),
    "index_rows_match": ("tf.raw_ops.CropAndResize",
                         dict(image=T("float32", 1, 4, 4, 1), boxes=T("float32", 3, 4), box_ind=T("int32", 2, values=(0, 0)),
                              crop_size=T("int32", 2, values=(1, 2))),
                         "box_ind.rank == 1 and box_ind.dim[0] == boxes.dim[0]"),
    "product_is_numel": ("torch.ops.aten.reshape", dict(self=T("float32", 3, 3), shape=[4, 1]),
                         "(len(shape) != 2 or shape[0] * shape[1] == self.dim[0] * self.dim[1]"),
    "padded_divisible": ("tf.raw_ops.SpaceToBatch",
                         dict(input=T("float32", 1, 5, 4, 1), paddings=T("int32", 2, 2, values=(0, 0, 0, 0)), block_size=2),
                         "(input.dim[1] + paddings[0] + paddings[1]) % block_size == 0"),
    "trailing_dims_from_list": ("torch.ops.aten.layer_norm", dict(input=T("float32", 3, 1), normalized_shape=[1, 3]),
                                "(len(normalized_shape) != 2 or (input.rank >= 2 and input.dim[-2] == normalized_shape[0]"),
    "shape_is_list": ("torch.ops.aten.layer_norm",
                      dict(input=T("float32", 2, 3), normalized_shape=[3], weight=T("float32", 4)),
                      "weight.rank == len(normalized_shape) and (len(normalized_shape) <= 0 or weight.dim[0] == normalized_shape[0])"),
    "depth_match": ("tf.raw_ops.Conv", dict(input=T("float32", 1, 4, 4, 8), filter=T("float32", 1, 1, 4, 2),
                                            strides=[1, 1, 1, 1], padding="VALID"),
                    "input.dim[-1] == filter.dim[-2]"),
    "diagonal_length": ("tf.raw_ops.MatrixSetDiagV3",
                        dict(input=T("float32", 2, 3, 4), diagonal=T("float32", 2, 4), k=T("int32", values=(0,))),
                        "diagonal.rank == input.rank - 1 and (input.rank < 3 or diagonal.dim[0] == input.dim[0])"),
    "depthwise_unsupported": ("tf.raw_ops.Conv", dict(input=T("float32", 1, 4, 4, 8), filter=T("float32", 1, 1, 4, 2),
                                                      strides=[1, 1, 1, 1], padding="VALID", groups=2),
                              "input.dim[-1] == filter.dim[-2]"),
    "channels_count": ("tf.raw_ops.FusedBatchNormV3",
                       dict(x=T("float32", 1, 2, 2, 3), scale=T("float32", 2), offset=T("float32", 3),
                            mean=T("float32", 0), variance=T("float32", 0), is_training=True),
                       "scale.rank == 1 and scale.dim[0] == x.dim[-1]"),
}

# messages that name an argument indirectly: the first rule read from them
RESOLUTION = {
    # "Shape must be rank 2" (a name the spec lacks) and "boxes must be 2-D": boxes first
    "unresolved-name": ("tf.raw_ops.NonMaxSuppressionV4",
                        dict(boxes=T("float32"), scores=T("float32", 3), max_output_size=T("int32", values=(2,)),
                             iou_threshold=T("float32", values=(0.5,)), score_threshold=T("float32", values=(0.0,))),
                        "rank_eq", "boxes.rank == 2"),
    # "axis tensor should be a scalar": axis, not the first tensor
    "two-word": ("tf.raw_ops.ConcatV2", dict(values=[T("float32", 2), T("float32", 2)], axis=T("int32", 2)),
                 "scalar", "axis.rank == 0"),
    # "key must be an int64 scalar: [1,5]": a dtype between the article and "scalar"
    "typed-scalar": ("tf.raw_ops.MapPeek", dict(key=T("int64", 1, 5), indices=T("int32", 1, values=(0,)),
                                                 dtypes=["float32"]),
                     "scalar", "key.rank == 0"),
    # "Input 0 (file_pattern) must be a string scalar": a position with its name
    "position-and-name": ("tf.raw_ops.Restore", dict(file_pattern=T("string", 2), tensor_name=T("string"),
                                                       dt="float32"),
                          "scalar", "file_pattern.rank == 0"),
    # "Expected input_shape to be a vector; got shape: [2,1]"
    "expected-vector": ("tf.raw_ops.SparseReduceSum",
                        dict(input_indices=T("int64", 1, 2, values=(0, 0)), input_values=T("float32", 1),
                             input_shape=T("int64", 2, 1, values=(2, 2)), reduction_axes=T("int32", values=(0,))),
                        "vector", "input_shape.rank == 1"),
    # "Both inputs must be of same shape: [3] vs. [2,3]": the arguments by their shapes
    "same-shape-by-shape": ("tf.raw_ops.Cross", dict(a=T("float32", 3), b=T("float32", 2, 3)),
                            "same_shape", None),
    # "Index rank (3) and shape rank (1) do not match": index -> indices
    "synonym": ("tf.raw_ops.SparseSlice",
                dict(indices=T("int64", 2, 3, values=(0,) * 6), values=T("float32", 2),
                     shape=T("int64", 1, values=(3,)), start=T("int64", 1, values=(0,)),
                     size=T("int64", 1, values=(1,))),
                "cols_is_len", "indices.dim[1] == shape.dim[0]"),
    # "Incompatible shapes of A and B": A is the first tensor (LU), B is B
    "letters": ("torch.ops.aten.linalg_lu_solve",
                dict(LU=T("float32", 2, 2), pivots=T("int32", 2, values=(1, 2)), B=T("float32", 3, 1)),
                "matmul_inner", "LU.dim[-1] == B.dim[-2] or B.rank == 1 and LU.dim[-1] == B.dim[0]"),
    "columns": ("tf.raw_ops.NonMaxSuppressionV4",
                dict(boxes=T("float32", 3, 1), scores=T("float32", 3), max_output_size=T("int32", values=(2,)),
                     iou_threshold=T("float32", values=(0.5,)), score_threshold=T("float32", values=(0.0,))),
                "last_dim_const", "boxes.dim[-1] == 4"),
    # "First input (lhs) must be a square matrix": the first tensor argument
    "ordinal": ("tf.raw_ops.MatrixSolve", dict(matrix=T("float32", 2, 3), rhs=T("float32", 2, 1)),
                "square", "matrix.rank >= 2 and matrix.dim[-1] == matrix.dim[-2]"),
}


#: families whose message TensorFlow gives only with oneDNN off (ACETest mode's setting)
ONEDNN_OFF = {"both_rank_eq", "depth_one", "nhwc_only", "ndhwc_only", "spatial_positive", "spatial_dims",
              "spatial_dilation_one", "explicit_padding_batch_depth", "items_nonnegative", "sizes_vector_length_in"}


@pytest.fixture(scope="module")
def executors():
    ex = {}

    def get(fw, onednn=True):
        if (fw, onednn) not in ex:
            ex[(fw, onednn)] = Executor(fw, timeout=30, **({} if onednn else
                                                            {"env": {"TF_ENABLE_ONEDNN_OPTS": "0"}}))
        return ex[(fw, onednn)]

    yield get
    for e in ex.values():
        e.close()


#: families whose rule an earlier family of the table also states for the
#: case's message (the candidate is credited to the first): the earlier one
#: guesses among every small int tensor, the later one only shape-named ones
SHADOWED = {"output_dims_positive": "values_positive"}


def test_every_family_in_the_table_has_a_case():
    assert {f.name for f in load_families()} >= set(CASES)


@pytest.mark.parametrize("family", sorted(CASES))
def test_family_learned_from_a_real_message(family, executors):
    api, args, want = CASES[family]
    spec = get_spec(api)
    args = {k: v for k, v in args.items() if v is not None}
    ai = AbstractInput(api=api, args=args, value_seed=1)
    res = executors(spec.framework, family not in ONEDNN_OFF).run(spec, ai)
    assert res.outcome == "invalid", (res.outcome, res.message)
    cands = [c for c in candidates_from_message(spec, ai, res.message) if c.family in (family, SHADOWED.get(family))]
    assert cands, f"no {family} rule from {res.message!r}"
    rule = cands[0].expr
    assert want in rule, (rule, res.message)
    assert not holds(rule, ai)  # the failing input breaks the rule it taught
    # the solver's next samples satisfy it
    rules = [rule]
    if ".value" in rule:  # x.value: the element of a one-element tensor (learned after x.rank == 0)
        name = rule.split(".value")[0].split()[-1].lstrip("(-")
        rules.append(f"{name}.rank == 0")
    sampler = Sampler([RegistryProblem(spec, rules)], seed=3)
    for _ in range(15):
        ai = sampler.next()
        assert holds(rule, ai)
        if ".value" in rule:  # the element is in the AbstractInput, decided by the solver
            assert ai.args[name].values is not None


@pytest.mark.parametrize("case", sorted(RESOLUTION))
def test_indirect_names_resolved(case, executors):
    api, args, family, want = RESOLUTION[case]
    spec = get_spec(api)
    ai = AbstractInput(api=api, args=args, value_seed=1)
    res = executors(spec.framework).run(spec, ai)
    assert res.outcome == "invalid", (res.outcome, res.message)
    cands = [c for c in candidates_from_message(spec, ai, res.message) if c.family in (family, SHADOWED.get(family))]
    if want is None:  # a shape relation: the failing input breaks it
        assert cands and not holds(cands[0].expr, ai), ([c.expr for c in cands], res.message)
        return
    assert cands and cands[0].expr == want, ([c.expr for c in cands], res.message)


def test_mined_dtype_rule_from_real_runs(executors):
    """A dtype without a kernel (erfinv on complex64, offered by a widened
    spec) is mined from the labelled runs as the dtypes seen passing, and the
    solver's next samples keep to them."""
    import dataclasses

    from acetest_ml.learn.mine import mine
    spec = get_spec("torch.ops.aten.erfinv")
    spec = dataclasses.replace(spec, args=[dataclasses.replace(spec.args[0],
                                                               dtypes=["float32", "float64", "int32", "complex64"])])
    sampler = Sampler([RegistryProblem(spec, [])], seed=1)
    passing, invalid = [], []
    for _ in range(30):
        ai = sampler.next()
        res = executors("torch").run(spec, ai)
        (passing if res.outcome == "pass" else invalid).append(ai)
    assert invalid and all(a.args["self"].dtype == "complex64" for a in invalid)
    rule, excluded = mine(spec, passing, invalid)[0]
    assert rule == "self.dtype in ('float32', 'float64', 'int32')" and excluded == len(invalid)
    # rows kept between calls (the learner mines the growing history again
    # and again): the same answer, from the cache on the second call
    cache: dict = {}
    assert mine(spec, passing[:-1], invalid, cache=cache) == mine(spec, passing[:-1], invalid)
    assert len(cache) == len(passing) - 1 + len(invalid)
    assert mine(spec, passing, invalid, cache=cache) == mine(spec, passing, invalid)
    nxt = Sampler([RegistryProblem(spec, [rule])], seed=2)
    assert all(nxt.next().args["self"].dtype != "complex64" for _ in range(15))


def test_message_number_read_as_a_relation(executors):
    """"Expected start to be a vector of length 2": the 2 is the length of
    ``shape`` (the sparse rank); the constant reading comes first, the
    relation to the failing input's equal terms after it."""
    api = "tf.raw_ops.SparseSlice"
    spec = get_spec(api)
    ai = AbstractInput(api=api, args=dict(indices=T("int64", 2, 2, values=(0,) * 4), values=T("float32", 2),
                                          shape=T("int64", 2, values=(3, 3)), start=T("int64", 1, values=(0,)),
                                          size=T("int64", 2, values=(1, 1))), value_seed=1)
    res = executors("tf").run(spec, ai)
    assert res.outcome == "invalid", (res.outcome, res.message)
    cands = [c.expr for c in candidates_from_message(spec, ai, res.message) if c.family == "vector_of_size"]
    assert cands[0] == "start.rank == 1 and start.dim[0] == 2"
    assert "start.rank == 1 and start.dim[0] == shape.dim[0]" in cands
    assert all(not holds(c, ai) for c in cands)


def test_mined_rules_compile_with_a_single_value():
    """An int seen with one value in every passing run is mined as a set of
    one, written so the rules language reads a tuple (``in (1,)``)."""
    from acetest_ml.learn.mine import mine
    spec = get_spec("torch.ops.aten.group_norm")
    passing = [AbstractInput(api=spec.name, args=dict(input=T("float32", 2, k + 2), num_groups=1), value_seed=k)
               for k in range(6)]
    invalid = [AbstractInput(api=spec.name, args=dict(input=T("float32", 2, 3), num_groups=2 + k % 3), value_seed=k)
               for k in range(8)]
    got = [e for e, _ in mine(spec, passing, invalid)]
    assert "num_groups in (1,)" in got
    for e in got:
        RegistryProblem(spec, [e])  # every mined rule compiles
