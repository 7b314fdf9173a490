"""The HTML report: one self-contained file with a flame graph, a CPU timeline and latency charts."""
from dataclasses import dataclass

from .base import Exporter


@dataclass(frozen=True)
class HtmlExporter(Exporter):
    def write(self, profile, report, stream):
        from ..render.html import render_html
        stream.write(render_html(report.to_json(), profile, profile.sched))


EXPORTER = HtmlExporter("html", ".html",
                        "self-contained interactive HTML report (flame graph, CPU timeline, latency)")
