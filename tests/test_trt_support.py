"""The static TensorRT check flags exactly the constructs the parser rejects."""

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from calibration.trt_support import check_tensorrt_support
from tests.onnx_graphs import conv_net


def _model(nodes, inputs, outputs, inits=(), opset=17):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _messages(model):
    return [(f.node, f.message) for f in check_tensorrt_support(model)]


def test_plain_conv_net_passes():
    assert check_tensorrt_support(conv_net()) == []


def test_conv_with_computed_weights_is_refused():
    # Conv weights produced by an Identity of a graph input: TensorRT needs constant weights.
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    w = helper.make_tensor_value_info("w", TensorProto.FLOAT, [4, 3, 3, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 6, 6])
    nodes = [
        helper.make_node("Identity", ["w"], ["w2"], name="id"),
        helper.make_node("Conv", ["x", "w2"], ["y"], name="c"),
    ]
    found = _messages(_model(nodes, [x, w], [y]))
    assert ("c", "weights are not a constant") in found


def test_unsupported_op_and_custom_domain_and_dynamic_input():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])
    y = helper.make_tensor_value_info("y", TensorProto.INT64, [2, "k"])
    z = helper.make_tensor_value_info("z", TensorProto.FLOAT, ["n", 4])
    nodes = [
        helper.make_node("NonZero", ["x"], ["y"], name="nz"),
        helper.make_node("Gelu", ["x"], ["z"], name="custom", domain="com.microsoft"),
    ]
    model = _model(nodes, [x], [y, z])
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    found = {f.node: f.message for f in check_tensorrt_support(model)}
    assert found["nz"] == "op not supported by the TensorRT 10 ONNX parser"
    assert "custom domain" in found["custom"]
    assert "dynamic shape" in found["x"]


def test_uint8_qdq_is_refused_and_int8_symmetric_passes():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    for dtype, zp, ok in ((np.uint8, 128, False), (np.int8, 3, False), (np.int8, 0, True)):
        inits = [
            numpy_helper.from_array(np.array(0.1, np.float32), "s"),
            numpy_helper.from_array(np.array(zp, dtype), "zp"),
        ]
        nodes = [
            helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"], name="q"),
            helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["y"], name="dq"),
        ]
        found = check_tensorrt_support(_model(nodes, [x], [y], inits))
        assert (found == []) == ok, (dtype, zp, found)
        if not ok:
            assert {f.node for f in found} == {"q", "dq"}


def test_resize_modes_and_int64_range_and_opset():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 8, 8])
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    big = numpy_helper.from_array(np.array([2**40], np.int64), "big")
    node = helper.make_node(
        "Resize",
        ["x", "", "scales"],
        ["y"],
        name="rs",
        mode="linear",
        coordinate_transformation_mode="tf_crop_and_resize",
    )
    found = _messages(_model([node], [x], [y], [scales, big], opset=21))
    assert ("rs", "coordinate_transformation_mode 'tf_crop_and_resize' not supported") in found
    assert ("big", "INT64 values outside int32 range") in found
    assert any(n == "<model>" and "opset 21" in m for n, m in found)


def test_slice_with_computed_axes_is_refused():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 4])
    a = helper.make_tensor_value_info("a", TensorProto.INT64, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])
    inits = [numpy_helper.from_array(np.array([0], np.int64), n) for n in ("st",)] + [
        numpy_helper.from_array(np.array([2], np.int64), "en")
    ]
    node = helper.make_node("Slice", ["x", "st", "en", "a"], ["y"], name="sl")
    found = _messages(_model([node], [x, a], [y], inits))
    assert ("sl", "input 3 ('a') is not a constant") in found
    assert ("a", "dtype 7 cannot be bound by TensorRT") in found
    onnx.checker.check_model(_model([node], [x, a], [y], inits))


def test_fold_constants_turns_shape_derived_pads_into_constants(tmp_path):
    # pads computed from the (static) input shape, as exporters write TF-style "same" padding
    import onnxruntime as ort

    from calibration.trt_support import fold_constants

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 10, 10])
    base = numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "base")
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"], name="shape"),
        helper.make_node("Sub", ["shape", "shape"], ["zeros"], name="sub"),
        helper.make_node("Concat", ["zeros", "zeros"], ["zeros8"], name="concat", axis=0),
        helper.make_node("Add", ["zeros8", "base"], ["pads"], name="add"),
        helper.make_node("Pad", ["x", "pads"], ["y"], name="pad"),
    ]
    model = _model(nodes, [x], [y], [base])
    model.ir_version = 8  # what ONNX Runtime reads
    entry = model.metadata_props.add()
    entry.key, entry.value = "seed", "7"
    path = tmp_path / "pad.onnx"
    onnx.save(model, str(path))
    assert ("pad", "input 1 ('pads') is not a constant") in _messages(onnx.load(str(path)))
    data = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    before = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": data})[0]
    fold_constants(path)
    folded = onnx.load(str(path))
    assert check_tensorrt_support(folded) == []
    assert {p.key: p.value for p in folded.metadata_props} == {"seed": "7"}
    after = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": data})[0]
    assert np.array_equal(before, after) and after.shape == (1, 3, 10, 10)
