"""The terminal report (rich), as an exporter."""
from dataclasses import dataclass

from rich.console import Console

from .base import Exporter


@dataclass(frozen=True)
class TerminalExporter(Exporter):
    top: int = 8
    console: object = None      # a rich Console to print to (stdout's, sized for pipes); else one on `stream`

    def write(self, profile, report, stream):
        from ..render.terminal import render_report
        console = self.console or Console(file=stream, highlight=False, width=140, force_terminal=False)
        render_report(report, console, top=self.top)


EXPORTER = TerminalExporter("terminal", ".txt", "the diagnosis as text tables and panels (default)")
