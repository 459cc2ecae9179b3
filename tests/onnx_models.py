"""Build small ONNX models with onnx.helper (no exporter needed) and their torch twins."""

from __future__ import annotations

import numpy as np
import torch


def small_onnx(path, auto_pad: bool = False) -> None:
    """Conv-BN-ReLU, max pool, conv-ReLU, global average pool, flatten, Gemm; input 1x3x32x32.
    ``auto_pad``: the second conv says ``auto_pad="SAME_UPPER"`` instead of ``pads``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)

    def init(name, *shape):
        return numpy_helper.from_array(rng.standard_normal(shape).astype("float32"), name)

    inits = [init("w1", 8, 3, 3, 3), init("g", 8), init("b", 8), init("m", 8),
             numpy_helper.from_array(np.abs(rng.standard_normal(8)).astype("float32") + 0.5, "v"),
             init("w2", 16, 8, 3, 3), init("b2", 16), init("wf", 10, 16), init("bf", 10)]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="stem.conv", pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        helper.make_node("BatchNormalization", ["c1", "g", "b", "m", "v"], ["n1"], name="stem.bn"),
        helper.make_node("Relu", ["n1"], ["r1"], name="stem.relu"),
        helper.make_node("MaxPool", ["r1"], ["p1"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], name="block.conv", kernel_shape=[3, 3],
                         **({"auto_pad": "SAME_UPPER"} if auto_pad else {"pads": [1, 1, 1, 1]})),
        helper.make_node("Relu", ["c2"], ["r2"], name="block.relu"),
        helper.make_node("GlobalAveragePool", ["r2"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "wf", "bf"], ["y"], name="fc", transB=1),
    ]
    graph = helper.make_graph(nodes, "small", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


class SmallTwin(torch.nn.Module):
    """The same network in torch, for comparing counts."""

    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = torch.nn.BatchNorm2d(8)
        self.conv2 = torch.nn.Conv2d(8, 16, 3, padding=1)
        self.fc = torch.nn.Linear(16, 10)

    def forward(self, x):
        x = torch.nn.functional.max_pool2d(torch.relu(self.bn(self.conv1(x))), 2)
        x = torch.relu(self.conv2(x))
        return self.fc(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(x, 1), 1))


def transc_onnx(path) -> None:
    """Sigmoid, Softmax over the last axis, Tanh, Relu, Gelu-free (opset 17 has none): input 1x4x8x8."""
    import onnx
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Sigmoid", ["x"], ["s"], name="sig"),
             helper.make_node("Softmax", ["s"], ["m"], name="soft", axis=-1),
             helper.make_node("Tanh", ["m"], ["t"], name="tanh"),
             helper.make_node("Relu", ["t"], ["y"], name="relu")]
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 4, 8, 8]) for n in ("x", "y")]
    graph = helper.make_graph(nodes, "transc", io[:1], io[1:])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


class TranscTwin(torch.nn.Module):
    """``transc_onnx`` in torch."""

    def forward(self, x):
        return torch.relu(torch.tanh(torch.softmax(torch.sigmoid(x), -1)))
