"""The everyday commands around ``otel-lab up``: ``logs``, ``stop``, ``open``, ``reset``,
``--version``.

They read what a running ``up`` wrote to ``<data dir>/run.json`` (its pid, each child's URL
and log file), so they work from any terminal. ``runtime.cli`` registers them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
import webbrowser
from collections import deque
from pathlib import Path
from typing import Annotated, TypedDict

import psutil
import typer
from rich.console import Console

from otel_lab import __version__
from otel_lab.runtime.plan import connect_host
from otel_lab.settings import get_settings

RUN_FILE = "run.json"


class ChildRow(TypedDict):
    """A child of `otel-lab up` in its run file (strings, as the status table shows them)."""

    name: str
    url: str  # "" when it serves none
    pid: str  # "" while it is not running
    log: str
    restarts: str


class RunState(TypedDict):
    """The run file: what `otel-lab up` runs where (`status`, `stop`, `open`, the tests)."""

    pid: int
    started: float
    data_dir: str
    database_url: str
    redis_url: str
    children: list[ChildRow]


LOG_DIR = "logs"
STOP_TIMEOUT_SECONDS = 30.0

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False)

DataDirOption = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Where embedded data, logs and the console store live "
        "\\[default: OTEL_LAB_DATA_DIR or .otel-lab]",
        show_default=False,
    ),
]


def data_dir_of(option: Path | None) -> Path:
    return (option or get_settings().data_dir).expanduser().resolve()


def running_state(directory: Path) -> RunState | None:
    """What the `otel-lab up` on ``directory`` wrote to its run file, if it still runs."""
    try:
        state: RunState = json.loads((directory / RUN_FILE).read_text())  # written by cli.py
    except (OSError, ValueError):
        return None
    return state if _alive(int(state["pid"])) else None


def show_version(value: bool) -> None:
    """``--version``: print it and exit (an eager option of the main callback)."""
    if value:
        out.print(f"otel-lab {__version__}")
        raise typer.Exit()


# --------------------------------------------------------------------------- logs
def _tail(path: Path, lines: int) -> tuple[list[str], int]:
    """The last ``lines`` lines of ``path``, and the offset where they end."""
    with path.open("rb") as f:
        last = deque(f, maxlen=lines) if lines > 0 else deque(f, maxlen=0)
        return [line.decode(errors="replace") for line in last], f.tell()


def _follow(paths: dict[str, Path], offsets: dict[str, int], prefix: bool) -> None:
    """Print what is appended to ``paths`` after ``offsets`` until Ctrl-C (a rotated file
    starts over)."""
    try:
        while True:
            for name, path in paths.items():
                try:
                    size = path.stat().st_size
                except OSError:
                    continue
                if size < offsets[name]:  # rotated or truncated: start over
                    offsets[name] = 0
                if size == offsets[name]:
                    continue
                with path.open("rb") as f:
                    f.seek(offsets[name])
                    chunk = f.read(size - offsets[name])
                offsets[name] = size
                for line in chunk.decode(errors="replace").splitlines():
                    out.print(f"{name} | {line}" if prefix else line, markup=False)
                out.file.flush()  # into a pipe (`| grep`) as it comes
            time.sleep(0.25)
    except KeyboardInterrupt:
        pass


def logs(
    name: Annotated[
        str | None,
        typer.Argument(help="A child of `otel-lab up` (gateway, api, worker, postgres, ...)."),
    ] = None,
    lines: Annotated[int, typer.Option("--lines", "-n", help="Lines from the end.")] = 50,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing.")] = False,
    data_dir: DataDirOption = None,
) -> None:
    """Show the logs of one child, or of all of them with their names in front."""
    log_dir = data_dir_of(data_dir) / LOG_DIR
    available = {p.stem: p for p in sorted(log_dir.glob("*.log"))}
    if not available:
        err.print(f"no logs in {log_dir}: has `otel-lab up` run with this data dir?")
        raise typer.Exit(1)
    if name is not None and name not in available:
        err.print(f"no log named {name!r}; there are: {', '.join(available)}")
        raise typer.Exit(1)
    chosen = {name: available[name]} if name is not None else available
    prefix = name is None
    offsets = {}
    for child, path in chosen.items():
        tail, offsets[child] = _tail(path, lines)
        for line in tail:
            text = line.rstrip("\n")
            out.print(f"{child} | {text}" if prefix else text, markup=False)
    out.file.flush()
    if follow:
        _follow(chosen, offsets, prefix)


# --------------------------------------------------------------------------- stop
def stop(data_dir: DataDirOption = None) -> None:
    """Stop the `otel-lab up` running on the data dir, as Ctrl-C in its terminal would."""
    directory = data_dir_of(data_dir)
    state = running_state(directory)
    if state is None:
        out.print(f"no `otel-lab up` is running for {directory}")
        return
    pid = int(state["pid"])
    out.print(f"stopping `otel-lab up` (pid {pid}) ...")
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
    while _alive(pid):
        if time.monotonic() > deadline:
            err.print(f"`otel-lab up` (pid {pid}) did not stop within {STOP_TIMEOUT_SECONDS:g} s")
            raise typer.Exit(1)
        time.sleep(0.2)
    out.print("stopped")


def _alive(pid: int) -> bool:
    """Running, and not merely a zombie its parent has yet to reap."""
    try:
        status: str = psutil.Process(pid).status()
        zombie: str = psutil.STATUS_ZOMBIE
        return status != zombie
    except psutil.NoSuchProcess:
        return False


# --------------------------------------------------------------------------- open
def open_url(
    name: Annotated[
        str,
        typer.Argument(help="`console` (the default), or a service: gateway, api, ..."),
    ] = "console",
    print_only: Annotated[
        bool, typer.Option("--print", help="Only print the URL, do not start a browser.")
    ] = False,
    data_dir: DataDirOption = None,
) -> None:
    """Open the telemetry console (or a service's API docs) in the browser."""
    state = running_state(data_dir_of(data_dir))
    urls = {row["name"]: row["url"] for row in state["children"] if row["url"]} if state else {}
    if not urls:
        settings = get_settings()
        urls = {"console": f"http://{connect_host(settings)}:{settings.console_ui_port}"}
        err.print("`otel-lab up` is not running here; this is where the console would be")
    if name not in urls:
        err.print(f"no URL for {name!r}; there are: {', '.join(sorted(urls))}")
        raise typer.Exit(1)
    # A service opens on its API docs; the console, and the worker's metrics page, as they are.
    url = urls[name] if name in ("console", "worker") else urls[name].rstrip("/") + "/docs"
    out.print(url, markup=False)
    if not print_only:
        webbrowser.open(url)


# --------------------------------------------------------------------------- reset
def reset(
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
    data_dir: DataDirOption = None,
) -> None:
    """Delete the embedded data, the console store and the logs (the data dir)."""
    directory = data_dir_of(data_dir)
    if running_state(directory) is not None:
        err.print(f"`otel-lab up` is running on {directory}: `otel-lab stop` it first")
        raise typer.Exit(1)
    if not directory.exists():
        out.print(f"nothing to delete: {directory} does not exist")
        return
    if not yes and not typer.confirm(f"Delete {directory} (databases, telemetry, logs)?"):
        raise typer.Exit(1)
    shutil.rmtree(directory)
    out.print(f"deleted {directory}")


def register(app: typer.Typer) -> None:
    app.command()(logs)
    app.command()(stop)
    app.command("open")(open_url)
    app.command()(reset)
