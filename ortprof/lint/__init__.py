"""`ortprof lint`: model-side checks from ONNX Runtime's performance troubleshooting list.

The package reads an ONNX model, runs ORT's graph optimizer at each level,
looks at layout (Transpose) overhead and, on request, at execution-provider
placement, and turns what it sees into `ortprof.findings.Finding`s.
Entry point: `ortprof.lint.run.lint_model`.
"""
