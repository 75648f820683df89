"""What a model costs: FLOPs per input pixel, counted from the model file itself, from the ONNX graph or from one
TorchScript forward. No torch at import: counting an ONNX model never imports it.
"""

from __future__ import annotations

import math
from pathlib import Path

from realsr_cli.errors import ModelError

FLOP_PROBE_EDGE = 64  # input edge of the FLOP count: a fully convolutional net's cost per pixel is size-independent


def count_flops(path: Path, kind: str) -> tuple[float, str]:
    """(FLOPs per input pixel, what they were counted from). TorchScript falls back to the same-stem .onnx file
    when torch counts nothing. Raises ModelError when neither file gives a count."""
    if kind == "onnx":
        return count_onnx_flops(path), "the ONNX graph"
    flops = count_torchscript_flops(path)
    if flops > 0:
        return flops, "a TorchScript run (torch FlopCounterMode)"
    sibling = path.with_suffix(".onnx")
    if not sibling.is_file():
        raise ModelError(f"{path}: torch counted no FLOPs in this model, and there is no {sibling.name} to count")
    return count_onnx_flops(sibling), f"the ONNX sibling {sibling.name}"


def count_onnx_flops(path: Path, edge: int = FLOP_PROBE_EDGE) -> float:
    """FLOPs (2 per multiply-add) per input pixel of Conv, ConvTranspose, Gemm and MatMul nodes, from shapes
    inferred at a 1 x 3 x edge x edge input (a fixed-size model's own size). Biases, activations, additions and
    control-flow subgraphs are not counted: a convolutional net's cost is its multiply-adds. Raises ModelError for a
    node whose shapes cannot be inferred."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)  # initializer dims are there without their data
    weights = {t.name: tuple(t.dims) for t in model.graph.initializer}
    image = next(i for i in model.graph.input if i.name not in weights)
    dims = image.type.tensor_type.shape.dim
    for dim, probe in zip(dims, (1, None, edge, edge), strict=False):
        if probe is not None and not dim.HasField("dim_value"):
            dim.dim_value = probe  # replaces the symbolic batch/height/width
    pixels = dims[2].dim_value * dims[3].dim_value
    graph = onnx.shape_inference.infer_shapes(model, data_prop=True).graph
    shapes = dict(weights)
    for info in (*graph.input, *graph.value_info, *graph.output):
        shape = tuple(d.dim_value if d.HasField("dim_value") else None for d in info.type.tensor_type.shape.dim)
        shapes[info.name] = shape if shape and None not in shape else None
    macs = sum(_node_macs(node, shapes, path) for node in graph.node)
    return 2.0 * macs / pixels


def _node_macs(node, shapes: dict[str, tuple[int, ...] | None], path: Path) -> int:
    """Multiply-adds of one node; 0 for the kinds not counted."""
    if node.op_type not in ("Conv", "ConvTranspose", "Gemm", "MatMul"):
        return 0
    a, b, out = (shapes.get(name) for name in (node.input[0], node.input[1], node.output[0]))
    if a is None or b is None or out is None:
        raise ModelError(
            f"{path}: cannot count FLOPs: the shapes around {node.op_type} node {node.name or node.output[0]!r} "
            "are unknown after shape inference"
        )
    if node.op_type == "Conv":  # weight (C_out, C_in / group, kH, kW): per output element
        return math.prod(out) * math.prod(b[1:])
    if node.op_type == "ConvTranspose":  # weight (C_in, C_out / group, kH, kW): per input element
        return math.prod(a) * math.prod(b[1:])
    trans_a = any(attr.name == "transA" and attr.i for attr in node.attribute)
    return math.prod(out) * (a[-2] if trans_a else a[-1])


def count_torchscript_flops(path: Path, edge: int = FLOP_PROBE_EDGE) -> float:
    """FLOPs per input pixel of one forward at 1 x 3 x edge x edge, counted by torch's FlopCounterMode (its
    dispatch-level count sees the traced graph's aten::_convolution, which torch.profiler's with_flops leaves at 0;
    it counts convolutions and matrix products only, like the ONNX count)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    module = torch.jit.load(str(path), map_location="cpu").eval()
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        module(torch.zeros(1, 3, edge, edge))
    return counter.get_total_flops() / (edge * edge)
