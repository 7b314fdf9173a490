"""Initializers that are also graph inputs, and the copy of a model without them.

From IR version 4 on, an initializer listed in graph.input is only a default
value the caller may override, so ORT must treat it as a runtime input: no
constant folding and no fusion that needs the weight's value. Before IR 4 every
initializer had to be listed as an input and ORT treats them as constants.
"""
import os

import onnx

from ..errors import InputError

FIRST_IR_WITH_OPTIONAL_INPUTS = 4


def initializer_inputs(model):
    """Names of top-level graph inputs that are initializers (empty below IR 4)."""
    if model.ir_version < FIRST_IR_WITH_OPTIONAL_INPUTS:
        return []
    initializers = {t.name for t in model.graph.initializer}
    return [v.name for v in model.graph.input if v.name in initializers]


def remove_initializer_inputs(model):
    """Drop initializers from `model`'s graph inputs in place; returns the removed names."""
    removed = initializer_inputs(model)
    dropped = set(removed)
    keep = [v for v in model.graph.input if v.name not in dropped]
    del model.graph.input[:]
    model.graph.input.extend(keep)
    return removed


def without_initializer_inputs(model):
    """A copy of `model` without initializer inputs (the original stays untouched)."""
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    remove_initializer_inputs(fixed)
    return fixed


def fix_data_name(out_path, source_data_files):
    """Name of the weights file --fix writes next to OUT (external-data models only)."""
    return os.path.basename(out_path) + ".data" if source_data_files else None


def check_fix_destination(model_path, out_path, source_data_files):
    """InputError when --fix OUT cannot or must not be written (checked before any work)."""
    data_name = fix_data_name(out_path, source_data_files)
    if os.path.realpath(out_path) == os.path.realpath(model_path):
        raise InputError(f"--fix {out_path}: would overwrite the model itself; choose another path")
    out_dir = os.path.dirname(os.path.abspath(out_path))
    if not os.path.isdir(out_dir):
        raise InputError(f"--fix {out_path}: directory {out_dir} does not exist")
    if data_name:
        data_path = os.path.realpath(os.path.join(out_dir, data_name))
        model_dir = os.path.dirname(os.path.abspath(model_path))
        if any(data_path == os.path.realpath(os.path.join(model_dir, f)) for f in source_data_files):
            raise InputError(f"--fix {out_path}: its data file {data_name} would overwrite the model's own")


def write_fixed_model(model_path, out_path, source_data_files):
    """Write `model_path` minus its initializer inputs to `out_path`.

    A model with external data gets its weights written to `<OUT>.data` next to
    `out_path` (one file); a self-contained model stays self-contained.
    """
    check_fix_destination(model_path, out_path, source_data_files)
    data_name = fix_data_name(out_path, source_data_files)
    data_path = os.path.join(os.path.dirname(os.path.abspath(out_path)), data_name or "")
    try:
        model = onnx.load(model_path, load_external_data=True)
    except (OSError, ValueError, RuntimeError) as exc:
        raise InputError(f"{model_path}: cannot load its weights for --fix: {exc}") from None
    removed = remove_initializer_inputs(model)
    try:
        if data_name:
            if os.path.exists(data_path):
                os.remove(data_path)  # onnx appends to an existing data file
            onnx.save_model(model, out_path, save_as_external_data=True, all_tensors_to_one_file=True,
                            location=data_name, size_threshold=1024)
        else:
            onnx.save_model(model, out_path)
    except OSError as exc:
        raise InputError(f"--fix {out_path}: cannot write: {exc.strerror or exc}") from None
    return {
        "path": out_path,
        # onnx keeps tensors under 1 KiB inline, so a model of small weights gets no data file
        "external_data": data_name if data_name and os.path.isfile(data_path) else None,
        "removed_inputs": removed,
    }
