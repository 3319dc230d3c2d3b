"""``otel-lab``: start the whole system on one machine (``up``) and see what runs (``status``).

``up`` starts, in order: PostgreSQL and Valkey (embedded unless DATABASE_URL / REDIS_URL
are set), the migrations, the telemetry console, the services, the Celery worker and the
background traffic, waiting for each to be ready. A child that crashes later is restarted
(see ``runtime.supervisor``). Ctrl-C stops everything in reverse order.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated

import psutil
import typer
from rich.console import Console
from rich.table import Table

from otel_lab import faults
from otel_lab.console.cli import console
from otel_lab.faults import cli as fault_commands
from otel_lab.loadgen.cli import load
from otel_lab.runtime import commands
from otel_lab.runtime.commands import (
    RUN_FILE,
    ChildRow,
    DataDirOption,
    RunState,
    show_version,
)
from otel_lab.runtime.forkserver import ForkServer
from otel_lab.runtime.plan import child_env, connect_host, migrations_spec, plan_children
from otel_lab.runtime.procs import (
    ChildFailedError,
    RuntimeFailure,
    current_fork_server,
    use_fork_server,
)
from otel_lab.runtime.report import report_restarts
from otel_lab.runtime.supervisor import PortClaim, Supervisor
from otel_lab.settings import Settings, get_settings

app = typer.Typer(add_completion=False, no_args_is_help=True)
# Piped (a test, `| tee`): no terminal width to fit, so do not wrap URLs and paths at 80.
out = Console(width=None if sys.stdout.isatty() else 200)  # the table
err = Console(stderr=True, width=None if sys.stderr.isatty() else 200)  # progress, errors

READY_LINE = "otel-lab is up"


@app.callback()
def main(
    version: Annotated[
        bool | None,
        typer.Option("--version", callback=show_version, is_eager=True, help="Show it."),
    ] = None,
) -> None:
    """Otel Lab: observable Python microservices on one machine.

    `otel-lab up` starts everything (embedded PostgreSQL and Valkey, migrations, the
    telemetry console, the services and the Celery worker); Ctrl-C stops it all.
    """


def _data_dir(option: Path | None, settings: Settings) -> Path:
    return (option or settings.data_dir).expanduser().resolve()


@app.command()
def up(
    data_dir: DataDirOption = None,
    traffic: Annotated[
        bool, typer.Option("--traffic/--no-traffic", help="Send background traffic.")
    ] = True,
) -> None:
    """Start everything and run until Ctrl-C."""
    settings = get_settings()
    directory = _data_dir(data_dir, settings)
    directory.mkdir(parents=True, exist_ok=True)
    supervisor = Supervisor(directory / "logs", console=err)
    supervisor.install_signal_handlers()
    code = 1
    try:
        with supervisor:
            try:
                code = _up(supervisor, settings, directory, traffic=traffic)
            except ChildFailedError as exc:
                err.print(f"[red]error:[/] {exc.details()}", highlight=False)
            except RuntimeFailure as exc:
                if supervisor.stop_requested is not None:
                    code = 0
                    supervisor.say(f"{exc}, stopping")
                else:
                    code = 2
                    err.print(f"[red]error:[/] {exc}", highlight=False)
            finally:
                (directory / RUN_FILE).unlink(missing_ok=True)
    finally:
        if (fork_server := current_fork_server()) is not None:
            use_fork_server(None)
            fork_server.close()
    raise typer.Exit(code)


def _up(supervisor: Supervisor, settings: Settings, data_dir: Path, *, traffic: bool) -> int:
    # Here, not at the top: psycopg and the Valkey client are for `up` only, not `status`.
    from otel_lab.runtime.embedded import EmbeddedPostgres, EmbeddedValkey

    say = supervisor.say
    log_dir = data_dir / "logs"
    # Fail on a taken port before anything starts.
    pg_port, kv_port = settings.postgres_port, settings.valkey_port
    claims = list(plan_children(settings, data_dir, {}, traffic=traffic).port_claims)
    if pg_port and not settings.database_url:
        claims.append(PortClaim(pg_port, EmbeddedPostgres.port_setting))
    if kv_port and not settings.redis_url:
        claims.append(PortClaim(kv_port, EmbeddedValkey.port_setting))
    supervisor.check_ports(claims)
    # Imports what the Python children share while the datastores start (runtime.forkserver);
    # only now, so a taken port fails as fast as before.
    use_fork_server(ForkServer(log_dir / "forkserver.log"))

    # PostgreSQL's port is chosen now and the server started below, once the other children
    # are on their way: they need its address, not its answer, to start.
    pg = None
    if settings.database_url:
        database_url = settings.database_url
        say("PostgreSQL: external (DATABASE_URL)")
    else:
        pg = EmbeddedPostgres(data_dir, port=pg_port, log_path=log_dir / "postgres.log").reserve()
        supervisor.adopt(pg, pg.url)  # adopted first: stopped after everything else
        database_url = pg.url
    if settings.redis_url:
        redis_url = settings.redis_url
        say("Valkey/Redis: external (REDIS_URL)")
    else:
        kv = EmbeddedValkey(data_dir, port=kv_port, log_path=log_dir / "valkey.log").start()
        supervisor.adopt(kv, kv.url)
        redis_url = kv.url
        say(f"[green]ready[/] [bold]valkey[/] on port {kv.port} (pid {kv.pid})")

    env = child_env(settings, data_dir, database_url, redis_url)
    starting = supervisor.launch(plan_children(settings, data_dir, env, traffic=traffic).children)
    if pg is not None:
        say("starting [bold]postgres[/] (embedded) ...")
        pg.start()
        say(f"[green]ready[/] [bold]postgres[/] on port {pg.port} (pid {pg.pid})")
    migrations = migrations_spec(env)
    if migrations is not None:
        supervisor.run_task(migrations)
    else:
        say("[green]ready[/] schema at the newest migration: nothing to migrate")
    supervisor.wait_ready(starting)

    _write_run_file(supervisor, data_dir, database_url, redis_url)
    supervisor.on_restart = lambda _entry: _write_run_file(
        supervisor, data_dir, database_url, redis_url
    )
    _print_table(supervisor, settings, data_dir)
    # After the table: the OTLP exporters it imports are no part of getting ready.
    report_restarts(supervisor, log_dir, env)
    return supervisor.wait()


def _shown(path: str, data_dir: Path) -> str:
    """A log path relative to the data dir (printed once below the table), to keep it narrow."""
    try:
        return str(Path(path).relative_to(data_dir))
    except ValueError:
        return path


def _rows(supervisor: Supervisor) -> list[ChildRow]:
    return [
        {
            "name": entry.name,
            "url": entry.url or "",
            "pid": str(entry.child.pid or ""),
            "log": str(entry.child.log_path),
            "restarts": str(entry.restarts),
        }
        for entry in supervisor.running
    ]


def _write_run_file(
    supervisor: Supervisor, data_dir: Path, database_url: str, redis_url: str
) -> None:
    """``<data_dir>/run.json``: what runs where, for `otel-lab status` and the test harness."""
    state: RunState = {
        "pid": os.getpid(),
        "started": time.time(),
        "data_dir": str(data_dir),
        "database_url": database_url,
        "redis_url": redis_url,
        "children": _rows(supervisor),
    }
    tmp = data_dir / f"{RUN_FILE}.tmp"  # readers never see half a file
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    tmp.replace(data_dir / RUN_FILE)


def _print_table(supervisor: Supervisor, settings: Settings, data_dir: Path) -> None:
    table = Table(title="Otel Lab", title_justify="left")
    for column in ("name", "url", "pid", "log (in the data dir)"):
        table.add_column(column, overflow="fold")
    for row in _rows(supervisor):
        table.add_row(row["name"], row["url"], row["pid"], _shown(row["log"], data_dir))
    out.print(table)
    if any(entry.name == "console" for entry in supervisor.running):
        ui = f"http://{connect_host(settings)}:{settings.console_ui_port}"
        out.print(f"Telemetry console: [bold]{ui}[/]")
    out.print(f"Data and logs: {data_dir}")
    if notice := faults.left_on_notice(data_dir / faults.FILE_NAME):
        out.print(f"[bold yellow]{notice}[/]")
    out.print(f"[bold green]{READY_LINE}[/]; press Ctrl-C to stop everything.")


@app.command()
def status(data_dir: DataDirOption = None) -> None:
    """Show what a running `otel-lab up` started (exit 1 if none is running)."""
    directory = _data_dir(data_dir, get_settings())
    try:
        state: RunState = json.loads((directory / RUN_FILE).read_text())
    except (OSError, ValueError):
        err.print(f"no `otel-lab up` is running for {directory}")
        raise typer.Exit(1) from None
    if not psutil.pid_exists(int(state["pid"])):
        err.print(f"`otel-lab up` (pid {state['pid']}) is gone; its run file is stale")
        (directory / RUN_FILE).unlink(missing_ok=True)
        raise typer.Exit(1)
    table = Table(title=f"Otel Lab (supervisor pid {state['pid']})", title_justify="left")
    for column in ("name", "state", "url", "pid", "restarts", "log"):
        table.add_column(column, overflow="fold")
    for row in state["children"]:
        alive = row["pid"] and psutil.pid_exists(int(row["pid"]))
        mark = "[green]running[/]" if alive else "[red]gone[/]"
        restarts = row.get("restarts", "0")
        table.add_row(row["name"], mark, row["url"], row["pid"], restarts, row["log"])
    out.print(table)


app.add_typer(fault_commands, name="fault")  # otel-lab fault list|on NAME|off NAME
app.command("load")(load)
app.command("console")(console)  # the telemetry console on its own
commands.register(app)


if __name__ == "__main__":
    app()
