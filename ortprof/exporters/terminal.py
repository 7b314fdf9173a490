"""The terminal report (rich), as an exporter."""
from dataclasses import dataclass, replace

from rich.console import Console


@dataclass(frozen=True)
class TerminalExporter:
    name: str = "terminal"
    suffix: str = ".txt"
    binary: bool = False
    description: str = "the diagnosis as text tables and panels (default)"
    top: int = 8
    console: object = None      # a rich Console to print to (stdout's, sized for pipes); else one on `stream`

    def configure(self, top=None, console=None, **_):
        return replace(self, top=top or self.top, console=console or self.console)

    def write(self, profile, report, stream):
        from ..render.terminal import render_report
        console = self.console or Console(file=stream, highlight=False, width=140, force_terminal=False)
        render_report(report.to_json(), console, top=self.top)


EXPORTER = TerminalExporter()
