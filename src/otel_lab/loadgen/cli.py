"""``otel-lab load``: runs, concurrency, delay and host, plus a duration."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from rich.table import Table

from otel_lab.settings import get_settings

if TYPE_CHECKING:
    from otel_lab.loadgen.runner import Report

app = typer.Typer(add_completion=False)


def _summary(report: Report) -> Table:
    table = Table(title=f"{report.total} requests in {report.elapsed:.1f} s")
    for column in ("endpoint", "requests", "req/s", "p50 ms", "p95 ms", "p99 ms", "errors"):
        table.add_column(column, justify="left" if column == "endpoint" else "right")
    for name, stats in sorted(report.stats.items()):
        table.add_row(
            name,
            str(len(stats.latencies)),
            f"{len(stats.latencies) / report.elapsed:.1f}",
            *(f"{stats.percentile(q) * 1000:.1f}" for q in (0.5, 0.95, 0.99)),
            f"[red]{stats.unexpected}[/]" if stats.unexpected else "0",
        )
    return table


@app.command()
def load(
    runs: Annotated[int, typer.Option(min=1, help="Rounds of requests.")] = 10,
    concurrency: Annotated[int, typer.Option(min=1, max=64, help="Requests per round.")] = 3,
    delay: Annotated[float, typer.Option(min=0, help="Seconds between rounds.")] = 0.5,
    host: Annotated[str | None, typer.Option(help="Base URL (default: the gateway).")] = None,
    duration: Annotated[
        float | None, typer.Option(min=1, help="Run for this many seconds instead of --runs.")
    ] = None,
    quiet: Annotated[
        bool, typer.Option(help="No progress bar or table (background traffic).")
    ] = False,
) -> None:
    """Send a mix of requests over every endpoint and print a per-endpoint summary."""
    # Here, not at the top: `otel-lab` registers this command, and its other commands (`up`
    # above all) should not pay for importing httpx.
    from otel_lab.loadgen.runner import LoadPlan, run

    settings = get_settings()
    base = host or f"http://127.0.0.1:{settings.gateway_port}"
    plan = LoadPlan(host=base, runs=runs, concurrency=concurrency, delay=delay, duration=duration)
    console = Console()
    if quiet:
        asyncio.run(run(plan))
        return
    total = None if duration else runs * concurrency
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task(f"load -> {base}", total=total)
        report = asyncio.run(run(plan, on_request=lambda: progress.advance(task)))
    console.print(_summary(report))
    if any(stats.unexpected for stats in report.stats.values()):
        console.print("[yellow]some requests got unexpected answers; see the errors column[/]")
