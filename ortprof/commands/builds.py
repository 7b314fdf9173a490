"""`ortprof builds`: the ONNX Runtime builds made by `ortprof build`."""
import json
import os
from pathlib import Path

import click


def _short_path(path):
    """Relative to the current directory when inside it (build/venv-debug), else as is."""
    if not path:
        return "-"
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative


@click.command()
@click.option("--build-root", type=click.Path(file_okay=False, path_type=Path), default=Path("build"),
              show_default=True, help="Where `ortprof build` put its builds.")
@click.option("--json", "as_json", is_flag=True, help="Print the manifests as one JSON object.")
def command(build_root, as_json):
    """List the ONNX Runtime builds (and unfinished ones) under the build root."""
    from rich.console import Console
    from rich.table import Table

    from ..builder.manifest import list_builds

    listing = list_builds(build_root)
    if as_json:
        click.echo(json.dumps(listing, indent=2))
        return
    console = Console()
    if not listing["builds"] and not listing["unfinished"]:
        console.print(f"no builds in {listing['build_root']}; make one with `ortprof build --config Debug`")
        return
    if listing["builds"]:
        table = Table(title=f"builds in {listing['build_root']}", title_justify="left")
        for column in ("config", "ORT", "symbols"):
            table.add_column(column, no_wrap=True)
        table.add_column("installed into", overflow="fold", min_width=16)
        table.add_column("built", no_wrap=True)
        for build in listing["builds"]:
            commit = (build.get("ort_commit") or "")[:8]
            table.add_row(build["config"], f"{build['ort_version']} {commit}".strip(),
                          build.get("symbol_status") or "-",
                          _short_path(build.get("venv") or build.get("site_packages")),
                          build.get("built_at", "-").replace("T", " ")[5:16])
        console.print(table)
    for state in listing["unfinished"]:
        where = f" at step {state['step']}" if state.get("step") else ""
        if state["status"] == "running":
            eta = f", ETA {state['eta']}" if state.get("eta") else ""
            then = f"in progress (pid {state.get('pid')}{eta})"
        else:
            then = f"`ortprof build --config {state['config']}` resumes it"
        console.print(f"{state['config']}: {state['status']}{where} (ORT {state.get('ort_version')}, log "
                      f"{state.get('log')}); {then}", highlight=False, soft_wrap=True)
