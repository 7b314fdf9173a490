"""Loading a model file safely and describing it: IR, opsets, parameters, inputs, external data."""
import os

import onnx
from google.protobuf.message import DecodeError

from ..errors import InputError
from .graph import DEFAULT_DOMAINS, iter_graphs, node_count

# Domains ONNX Runtime implements itself; anything else needs a custom-op library
# (or is defined by the model's own local functions).
ORT_KNOWN_DOMAINS = set(DEFAULT_DOMAINS) | {
    "ai.onnx.ml",
    "ai.onnx.training",
    "ai.onnx.preview.training",
    "com.microsoft",
    "com.microsoft.nchwc",
    "com.microsoft.experimental",
    "com.ms.internal.nhwc",
}

# Sub-byte element types (int4, uint4, float4e2m1) pack two values per byte.
_HALF_BYTE_TYPES = {
    getattr(onnx.TensorProto, name)
    for name in ("INT4", "UINT4", "FLOAT4E2M1")
    if hasattr(onnx.TensorProto, name)
}


def load_model(path):
    """The model proto without its external weights, or InputError with one clear line."""
    if not os.path.exists(path):
        raise InputError(f"{path}: no such file")
    if os.path.isdir(path):
        raise InputError(f"{path}: is a directory, expected an .onnx file")
    if os.path.getsize(path) == 0:
        raise InputError(f"{path}: empty file, not an ONNX model")
    try:
        model = onnx.load(path, load_external_data=False)
    except (DecodeError, RuntimeError, ValueError) as exc:
        reason = str(exc).replace("Error parsing message with type 'onnx.ModelProto': ", "")
        raise InputError(f"{path}: not an ONNX model or truncated (protobuf: {reason})") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from None
    # Protobuf accepts some garbage as an almost empty message: require the basics.
    if model.ir_version <= 0 or not model.HasField("graph") or not model.opset_import:
        raise InputError(f"{path}: not an ONNX model (no IR version, graph or opset import)")
    return model


def external_tensors(model):
    """Initializers (in all subgraphs) whose bytes live in external files."""
    return [
        tensor
        for graph in iter_graphs(model.graph)
        for tensor in graph.initializer
        if tensor.data_location == onnx.TensorProto.EXTERNAL
    ]


def _external_fields(tensor):
    return {entry.key: entry.value for entry in tensor.external_data}


def check_external_data(model, model_path):
    """{file: bytes} of the external data, InputError if a file is missing or too short."""
    model_dir = os.path.dirname(os.path.abspath(model_path))
    files = {}
    for tensor in external_tensors(model):
        fields = _external_fields(tensor)
        location = fields.get("location", "")
        data_path = os.path.join(model_dir, location)
        if not location or not os.path.isfile(data_path):
            raise InputError(
                f"{model_path}: missing external data: initializer {tensor.name!r} points to {location!r}, "
                f"not found in {model_dir}"
            )
        end = int(fields.get("offset", 0) or 0) + int(fields.get("length", 0) or 0)
        size = os.path.getsize(data_path)
        if end > size:
            raise InputError(
                f"{model_path}: truncated external data: initializer {tensor.name!r} needs bytes up to {end} "
                f"of {location!r}, which has {size}"
            )
        files[location] = size
    return files


def tensor_numel(tensor):
    count = 1
    for dim in tensor.dims:
        count *= dim
    return count


def tensor_nbytes(tensor):
    """Bytes of the tensor's data (from its external-data record when there is one)."""
    if tensor.data_location == onnx.TensorProto.EXTERNAL:
        length = _external_fields(tensor).get("length")
        if length:
            return int(length)
    numel = tensor_numel(tensor)
    if tensor.data_type in _HALF_BYTE_TYPES:
        return (numel + 1) // 2
    if tensor.data_type == onnx.TensorProto.STRING:
        return sum(len(s) for s in tensor.string_data)
    try:
        itemsize = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    except (KeyError, TypeError, ValueError):
        return 0
    return numel * itemsize


def _dim_text(dim):
    if dim.HasField("dim_value"):
        return dim.dim_value
    if dim.HasField("dim_param") and dim.dim_param:
        return dim.dim_param
    return "?"


def _elem_type_name(elem_type):
    try:
        return onnx.TensorProto.DataType.Name(elem_type).lower()
    except ValueError:
        return str(elem_type)


def describe_value(value_info):
    """{name, type, shape, dynamic_axes} of a graph input/output; symbolic dims stay strings."""
    ttype = value_info.type.tensor_type if value_info.type.HasField("tensor_type") else None
    if ttype is None:
        kind = value_info.type.WhichOneof("value") or "unknown"
        return {"name": value_info.name, "type": kind, "shape": None, "dynamic_axes": []}
    shape = [_dim_text(d) for d in ttype.shape.dim] if ttype.HasField("shape") else None
    dynamic = [i for i, d in enumerate(shape or []) if not isinstance(d, int)]
    return {
        "name": value_info.name,
        "type": _elem_type_name(ttype.elem_type),
        "shape": shape,
        "dynamic_axes": dynamic,
    }


def model_facts(model, path, external_files):
    graph = model.graph
    initializer_names = {t.name for t in graph.initializer}
    all_initializers = [t for g in iter_graphs(graph) for t in g.initializer]
    used_domains = {node.domain or "ai.onnx" for g in iter_graphs(graph) for node in g.node}
    function_domains = {f.domain for f in model.functions}
    custom = sorted(d for d in used_domains if d not in ORT_KNOWN_DOMAINS and d not in function_domains)
    inputs = [describe_value(v) for v in graph.input if v.name not in initializer_names]
    ext = external_tensors(model)
    return {
        "path": path,
        "ir_version": model.ir_version,
        "opsets": {(o.domain or "ai.onnx"): o.version for o in model.opset_import},
        "producer": " ".join(p for p in (model.producer_name, model.producer_version) if p),
        "nodes": node_count(graph),
        "initializers": len(all_initializers),
        "parameters": sum(tensor_numel(t) for t in all_initializers),
        "parameter_bytes": sum(tensor_nbytes(t) for t in all_initializers),
        "inputs": inputs,
        "dynamic_inputs": [i["name"] for i in inputs if i["dynamic_axes"]],
        "outputs": [describe_value(v) for v in graph.output],
        "external_data": {
            "tensors": len(ext),
            "bytes": sum(tensor_nbytes(t) for t in ext),
            "files": dict(sorted(external_files.items())),
        },
        "custom_domains": custom,
        "local_functions": len(model.functions),
        "file_bytes": os.path.getsize(path),
    }
