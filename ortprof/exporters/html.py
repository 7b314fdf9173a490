"""The HTML report: one self-contained file."""
from dataclasses import dataclass


@dataclass(frozen=True)
class HtmlExporter:
    name: str = "html"
    suffix: str = ".html"
    binary: bool = False
    description: str = "self-contained HTML report"

    def write(self, profile, report, stream):
        from ..render.html import render_html
        stream.write(render_html(report.to_json()))


EXPORTER = HtmlExporter()
