"""The dashboard files are parsed once and read again when they change.

The console lists the dashboards on every ``/api/dashboards`` request; parsing and validating
the JSON each time cost about 1 ms, so ``dashboards.load`` keeps each file as loaded, keyed by
its modification time and size.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from otel_lab.console import dashboards

from .conftest import start_console

SHIPPED = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "dashboards"
UID = "otel-lab-overview"
HOUR_NS = 3600 * 1_000_000_000


class CountingAdapter:
    """Counts the files parsed (validate_json calls) by the real TypeAdapter."""

    def __init__(self) -> None:
        self.real = dashboards._DASHBOARD
        self.parsed = 0

    def validate_json(self, data: bytes) -> Any:
        self.parsed += 1
        return self.real.validate_json(data)


@pytest.fixture
def adapter(monkeypatch: pytest.MonkeyPatch) -> CountingAdapter:
    counting = CountingAdapter()
    monkeypatch.setattr(dashboards, "_DASHBOARD", counting)
    return counting


def _copy(to: Path) -> Path:
    """The shipped dashboards, last modified an hour ago (a clean clone's are fresh)."""
    shutil.copytree(SHIPPED, to)
    for path in to.glob("*.json"):
        _set_mtime(path, time.time_ns() - HOUR_NS)
    return to


def _set_mtime(path: Path, ns: int) -> None:
    os.utime(path, ns=(ns, ns))


def _retitle(path: Path, title: str) -> None:
    doc = json.loads(path.read_text())
    doc["title"] = title
    path.write_text(json.dumps(doc))


def test_a_second_load_parses_nothing(tmp_path: Path, adapter: CountingAdapter) -> None:
    directory = _copy(tmp_path / "dashboards")
    files = len(list(directory.glob("*.json")))
    first = dashboards.load(directory)
    assert adapter.parsed == files > 1
    second = dashboards.load(directory)
    assert adapter.parsed == files
    assert second.keys() == first.keys()
    assert all(second[uid] is first[uid] for uid in first)


def test_an_edited_file_is_read_again(tmp_path: Path, adapter: CountingAdapter) -> None:
    directory = _copy(tmp_path / "dashboards")
    path = dashboards.load(directory)[UID].path
    mtime = path.stat().st_mtime_ns
    parsed = adapter.parsed

    # The same size, a later (but settled) modification time.
    _retitle(path, "Overview A")
    _set_mtime(path, mtime + 1_000_000_000)
    size = path.stat().st_size
    assert dashboards.load(directory)[UID].title == "Overview A"
    # Another size, the same modification time.
    _retitle(path, "Overview, longer")
    _set_mtime(path, mtime + 1_000_000_000)
    assert path.stat().st_size != size
    assert dashboards.load(directory)[UID].title == "Overview, longer"
    # Only the edited file was parsed again.
    assert adapter.parsed == parsed + 2
    assert dashboards.load(directory)[UID].title == "Overview, longer"
    assert adapter.parsed == parsed + 2


def test_a_file_just_written_is_not_cached(tmp_path: Path, adapter: CountingAdapter) -> None:
    """A same-size rewrite in the same tick of the kernel's file clock keeps the modification
    time, so a file modified within the last second is parsed on every load."""
    directory = _copy(tmp_path / "dashboards")
    path = dashboards.load(directory)[UID].path
    _retitle(path, "Overview B")  # modified now
    stamp = path.stat().st_mtime_ns
    assert dashboards.load(directory)[UID].title == "Overview B"
    _retitle(path, "Overview C")  # the same size
    _set_mtime(path, stamp)  # as if written in the same tick
    assert dashboards.load(directory)[UID].title == "Overview C"


def test_files_added_and_removed(tmp_path: Path) -> None:
    directory = _copy(tmp_path / "dashboards")
    before = dashboards.load(directory)
    path = before[UID].path
    copy = json.loads(path.read_text()) | {"uid": "copy", "title": "A copy"}
    (directory / "copy.json").write_text(json.dumps(copy))
    path.unlink()
    after = dashboards.load(directory)
    assert after.keys() == (before.keys() - {UID}) | {"copy"}
    assert after["copy"].title == "A copy"
    assert path not in dashboards._LOADED


def test_the_console_shows_an_edited_dashboard(tmp_path: Path) -> None:
    """Through a real console whose deploy directory (CONSOLE_DEPLOY_DIR) is a copy."""
    deploy = tmp_path / "deploy"
    directory = _copy(deploy / "grafana" / "dashboards")
    console = start_console(tmp_path / "telemetry.db", env={"CONSOLE_DEPLOY_DIR": str(deploy)})
    try:

        def titles() -> dict[str, str]:
            listed = console.api("/api/dashboards").json()["dashboards"]
            return {b["uid"]: b["title"] for b in listed}

        shipped = titles()
        assert UID in shipped and shipped == titles()
        _retitle(directory / f"{UID}.json", "Edited overview")
        assert titles() == shipped | {UID: "Edited overview"}
        board = console.api(f"/api/dashboards/{UID}", window="5m").json()
        assert board["title"] == "Edited overview"
    finally:
        assert console.stop() == 0
