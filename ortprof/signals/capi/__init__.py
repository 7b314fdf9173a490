"""Calls into ONNX Runtime's C API, seen by uprobes: every non-Python client (C, C++, C#,
Java, Node, Rust, onnxruntime_perf_test) reaches ORT through the OrtApi table of
libonnxruntime.so, whose functions ortprof.symbols.ortapi locates in the file.

probes.py adds and removes the uprobes (perf probe), owned by the ortprof process that
added them; spans.py turns the recorded entry and return events into calls with durations.
"""
