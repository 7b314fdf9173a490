"""Turning ONNX Runtime's exception text into one readable line (no onnx import: the
placement probe uses this in a child that may run another ORT install)."""
import re


def ort_load_error(exc, path):
    """One readable line from an ORT load exception."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", text)
    text = re.sub(r"^Load model from .*? failed:", "", text).strip()
    unknown = re.search(r"No Op registered for (\S+) with domain_version of (\d+)", text)
    if unknown:
        text = f"unknown operator {unknown.group(1)} (ai.onnx opset {unknown.group(2)})"
    custom = re.search(r"(\S+):(\S+)\(-?\d+\) is not a registered function/op", text)
    if custom:
        text = (f"operator {custom.group(2)} of domain {custom.group(1)} is not known to ONNX Runtime "
                f"(custom ops need their library registered)")
    if len(text) > 300:
        text = text[:297] + "..."
    return f"ONNX Runtime cannot load {path}: {text}"
