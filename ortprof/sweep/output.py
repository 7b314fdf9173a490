"""What a sweep prints and writes: the seed-style table (one per condition), the
recommendation with its snippet, CSV and the CPU-vs-p95 plot."""
import csv
import io
from pathlib import Path

from rich import box
from rich.table import Table
from rich.text import Text

from ..errors import EnvironmentProblem, InputError
from . import recommend
from .results import FIGURES

PLOT_FORMATS = (".png", ".svg")


def _half(cell, figure):
    interval = (cell.get("ci95") or {}).get(figure)
    return None if not interval else (interval[1] - interval[0]) / 2


def _number(cell, figure, digits, interval=True):
    value = cell.get(figure)
    if value is None:
        return "-"
    text = f"{value:.{digits}f}"
    half = _half(cell, figure) if interval else None
    return text if half is None else f"{text} ±{half:.{digits}f}"


def _ratio(cell, key):
    ratios = cell.get("ratios")
    return "-" if not ratios else f"{ratios[key]:.2f}x"


def _config(cell):
    marks = [mark for mark, present in (("defaults", cell.get("is_defaults")),
                                         ("recommended", cell.get("recommended")),
                                         ("FAILED", cell["status"] == "failed"),
                                         ("not run", cell["status"] == "not run")) if present]
    return cell["label"] + (f" ({', '.join(marks)})" if marks else "")


def _runs(cell):
    """Runs measured, and how many were tried when some failed (reasons follow the table)."""
    failed = len(cell["failures"])
    return f"{cell['repeats']}/{cell['repeats'] + failed}" if failed else str(cell["repeats"])


def render(document, console):
    """The terminal output of a sweep: header, a table per condition, the recommendation."""
    options = document.get("options", {})
    cells = document["cells"]
    runs = sum(cell["repeats"] + len(cell["failures"]) for cell in cells)
    console.print(f"[bold]ortprof sweep[/] {document.get('name') or ''}: {len(cells)} configurations, "
                  f"{runs} runs of {options.get('duration'):g} s ({document.get('status')}) "
                  f"-> [cyan]{document.get('directory')}[/]")
    groups = recommend.group_by_condition(cells)
    for group in groups.values():
        console.print(_table(group, len(groups) > 1))
    console.print("[dim]n = runs measured; CPU = process CPU in % of one core; ± = 95% interval over runs; "
                  "front = Pareto front of CPU vs p95; x = ratio to the defaults (most threads, spinning on).[/]")
    for recommendation in document.get("recommendations", []):
        _print_recommendation(console, recommendation, document, len(groups) > 1)
    overall = document.get("recommendation")
    if len(groups) > 1 and overall and overall.get("snippet"):
        console.print(f"\n[bold]Across all conditions[/] ({document['latency_budget']['meaning']} in each): "
                      f"{overall['label']}")
        console.print(Text(overall["snippet"]))
    for warning in document.get("warnings", []):
        console.print(f"[yellow]ortprof:[/] {warning}")


def _table(group, show_condition):
    throttling = any(cell.get("throttled_ms_per_s") is not None for cell in group)
    title = group[0]["condition_label"] if show_condition or group[0]["condition"].get("cpus") else None
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("config", no_wrap=True)
    headings = ["n", "CPU %", "CPU ms/inf", "p50 ms", "p95 ms", "p99 ms", "req/s"]
    if throttling:
        headings.append("throttled ms/s")
    for heading in headings + ["CPU x", "p95 x"]:
        table.add_column(heading, justify="right")
    table.add_column("front", justify="center")
    for cell in group:
        # Intervals for the two figures the choice rests on; all of them are in --json/--csv.
        row = [_config(cell), _runs(cell), _number(cell, "cpu_pct", 1), _number(cell, "cpu_ms_per_inference", 2, False),
               _number(cell, "p50_ms", 2, False), _number(cell, "p95_ms", 2), _number(cell, "p99_ms", 2, False),
               _number(cell, "throughput", 1, False)]
        if throttling:
            row.append(_number(cell, "throttled_ms_per_s", 1, False))
        row += [_ratio(cell, "cpu"), _ratio(cell, "p95"), "*" if cell.get("pareto") else ""]
        style = "bold green" if cell.get("recommended") else ("red" if cell["status"] == "failed" else None)
        table.add_row(*row, style=style)
    return table


def _print_recommendation(console, recommendation, document, show_condition):
    where = f" ({recommend.describe_condition(recommendation['condition'])})" if show_condition else ""
    budget = document["latency_budget"]["meaning"]
    if recommendation.get("budget_ms") is not None:
        budget += f" = {recommendation['budget_ms']:.2f} ms"
    if not recommendation.get("snippet"):
        console.print(f"\n[bold]No recommendation{where}[/]: {recommendation.get('reason')}")
        return
    price = recommendation["price"]
    ratios = price.get("ratios")
    cost = f"{price['cpu_pct']:.1f}% CPU, p95 {price['p95_ms']:.2f} ms"
    if ratios and not recommendation.get("is_defaults"):
        cost += f" ({ratios['cpu']:.2f}x the defaults' CPU, {ratios['p95']:.2f}x their p95)"
    console.print(f"\n[bold]Recommendation{where}[/] ({budget}): [bold green]{recommendation['label']}[/] - {cost}")
    if recommendation.get("cpu_tied_with"):
        console.print(f"[dim]Within the noise of its CPU: {', '.join(recommendation['cpu_tied_with'])} "
                      "(95% intervals overlap); either is as cheap.[/]")
    console.print(Text(recommendation["snippet"]))


def to_csv(document):
    """One row per cell: settings, condition, every figure with its interval, ratios and flags."""
    cells = document["cells"]
    setting_keys = []
    for cell in cells:
        for key in cell["settings"]:
            if key not in setting_keys:
                setting_keys.append(key)
    condition_keys = sorted({key for cell in cells for key in cell["condition"]})
    header = ["cell", "label", *condition_keys, *setting_keys, "is_defaults", "status", "repeats"]
    for figure in FIGURES:
        header += [figure, f"{figure}_ci_low", f"{figure}_ci_high"]
    header += ["cpu_ratio", "p95_ratio", "pareto", "within_budget", "recommended"]
    stream = io.StringIO()
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(header)
    for cell in cells:
        row = [cell["id"], cell["label"], *(cell["condition"].get(k) for k in condition_keys),
               *(cell["settings"].get(k, "") for k in setting_keys), cell.get("is_defaults"), cell["status"],
               cell["repeats"]]
        for figure in FIGURES:
            interval = (cell.get("ci95") or {}).get(figure) or [None, None]
            row += [cell.get(figure), *interval]
        ratios = cell.get("ratios") or {}
        row += [ratios.get("cpu"), ratios.get("p95"), cell.get("pareto"), cell.get("within_budget"),
                cell.get("recommended")]
        writer.writerow(["" if value is None else value for value in row])
    return stream.getvalue()


def check_plot_path(path):
    if Path(path).suffix.lower() not in PLOT_FORMATS:
        raise InputError(f"--plot {path}: give a .png or .svg file")
    if not Path(path).resolve().parent.is_dir():
        raise InputError(f"--plot {path}: no such directory {Path(path).parent}")


def plot(document, path):
    """CPU vs p95 scatter per condition, the Pareto front drawn, the recommendation starred."""
    check_plot_path(path)
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise EnvironmentProblem("--plot needs matplotlib: pip install 'ortprof[plot]' (or pip install matplotlib)")
    groups = recommend.group_by_condition(document["cells"])
    figure, axis = plt.subplots(figsize=(8, 5.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, group in enumerate(groups.values()):
        color = colors[index % len(colors)]
        done = [cell for cell in group if recommend.measured(cell)]
        if not done:
            continue
        x = [cell["cpu_pct"] for cell in done]
        y = [cell["p95_ms"] for cell in done]
        xerr = [[c["cpu_pct"] - c["ci95"]["cpu_pct"][0] if c["ci95"].get("cpu_pct") else 0 for c in done],
                [c["ci95"]["cpu_pct"][1] - c["cpu_pct"] if c["ci95"].get("cpu_pct") else 0 for c in done]]
        # intervals are cut at zero: a latency below 0 means nothing (and log axes cannot show it)
        yerr = [[min(c["p95_ms"] - c["ci95"]["p95_ms"][0], 0.9 * c["p95_ms"]) if c["ci95"].get("p95_ms") else 0
                 for c in done],
                [c["ci95"]["p95_ms"][1] - c["p95_ms"] if c["ci95"].get("p95_ms") else 0 for c in done]]
        axis.errorbar(x, y, xerr=xerr, yerr=yerr, fmt="o", color=color, alpha=0.8, capsize=3,
                      label=group[0]["condition_label"])
        front = sorted((c for c in done if c.get("pareto")), key=lambda c: c["cpu_pct"])
        axis.plot([c["cpu_pct"] for c in front], [c["p95_ms"] for c in front], "-o", color=color, linewidth=2,
                  alpha=0.5, markersize=12, markerfacecolor="none")
        for position, cell in enumerate(sorted(done, key=lambda c: (c["cpu_pct"], c["p95_ms"]))):
            text = cell["label"] + (" (defaults)" if cell.get("is_defaults") else "")
            # alternate above/below so neighbouring labels do not print over each other
            axis.annotate(text, (cell["cpu_pct"], cell["p95_ms"]), textcoords="offset points",
                          xytext=(6, 6 if position % 2 == 0 else -12), fontsize=8)
            if cell.get("recommended"):
                axis.plot([cell["cpu_pct"]], [cell["p95_ms"]], "*", color=color, markersize=18,
                          markeredgecolor="black")
    axis.set_xlabel("process CPU (% of one core)")
    axis.set_ylabel("p95 latency (ms)")
    axis.set_title(f"ortprof sweep {document.get('name') or ''}: CPU vs p95 (ringed: Pareto front, star: recommended)",
                   fontsize=10)
    most = max((c["cpu_pct"] for c in document["cells"] if recommend.measured(c)), default=1)
    axis.set_xlim(0, most * 1.45 + 1)     # room for the labels right of the points
    latencies = [c["p95_ms"] for c in document["cells"] if recommend.measured(c) and c["p95_ms"] > 0]
    if latencies and max(latencies) / min(latencies) > 10:
        axis.set_yscale("log")    # a quota can put one configuration 100x above the rest
        axis.set_ylim(min(latencies) / 2, max(latencies) * 3)
    else:
        axis.set_ylim(bottom=0)
    axis.grid(True, alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    try:
        figure.savefig(path)
    except OSError as exc:
        raise InputError(f"--plot {path}: cannot write ({exc.strerror or exc})")
    finally:
        plt.close(figure)
    return path
