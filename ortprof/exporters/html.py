"""The HTML report: one self-contained file with a flame graph, a CPU timeline and latency charts."""
from dataclasses import dataclass


@dataclass(frozen=True)
class HtmlExporter:
    name: str = "html"
    suffix: str = ".html"
    binary: bool = False
    description: str = "self-contained interactive HTML report (flame graph, CPU timeline, latency)"

    def write(self, profile, report, stream):
        from ..render.html import render_html
        stream.write(render_html(report.to_json(), profile))


EXPORTER = HtmlExporter()
