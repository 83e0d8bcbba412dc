"""gateway_client.django.database() and its system check, in-process and in real Django projects.

The subprocess tests run tests/django_project under each project virtualenv (.venv: Django 6 on
Python 3.12+, .venv-django52: Django 5.2 on Python 3.11) against a main database the real gateway
created, with LD_LIBRARY_PATH pointing at the gateway's libsqlite3.so.0.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest
from gateway_harness import REPO, GatewayProcess, build_dir

django = pytest.importorskip("django")

from django.core import checks  # noqa: E402
from django.core.exceptions import ImproperlyConfigured  # noqa: E402
from gateway_client.django import database  # noqa: E402
from gateway_client.django.checks import W001, check_sqlite_version  # noqa: E402

PROJECT = Path(__file__).resolve().parent / "django_project"
MIN_SQLITE = (3, 51, 3)
EXPECTED_PRAGMAS = {
    "journal_mode": "wal",
    "wal_autocheckpoint": 0,
    "synchronous": 1,
    "busy_timeout": 5000,
    "mmap_size": 128 * 1024 * 1024,
    "journal_size_limit": 64 * 1024 * 1024,
    "cache_size": -32 * 1024,
    "foreign_keys": 1,
    "temp_store": 2,
}
VENVS = {
    "django6": REPO / ".venv" / "bin" / "python",
    "django52": REPO / ".venv-django52" / "bin" / "python",
}


def init_commands(entry: dict[str, Any]) -> list[str]:
    """Split init_command the way Django >= 5.1 does (on ';', blanks dropped)."""
    return [c.strip() for c in entry["OPTIONS"]["init_command"].split(";") if c.strip()]


# --- the settings helper, in-process ------------------------------------------------------------


def test_database_entry_defaults(tmp_path: Path) -> None:
    entry = database(tmp_path / "app.sqlite3")
    stock = django.VERSION[:2] >= (5, 1)
    assert entry["ENGINE"] == (
        "django.db.backends.sqlite3" if stock else "gateway_client.django.sqlite_backend"
    )
    assert entry["NAME"] == str(tmp_path / "app.sqlite3")
    assert entry["OPTIONS"]["transaction_mode"] == "IMMEDIATE"
    assert entry["OPTIONS"]["timeout"] == 5
    commands = init_commands(entry)
    for pragma in (
        "PRAGMA journal_mode=WAL",
        "PRAGMA synchronous=NORMAL",
        "PRAGMA wal_autocheckpoint=0",
        "PRAGMA busy_timeout=5000",
        "PRAGMA mmap_size=134217728",
        "PRAGMA journal_size_limit=67108864",
        "PRAGMA cache_size=-32768",
        "PRAGMA temp_store=MEMORY",
        "PRAGMA foreign_keys=ON",
    ):
        assert pragma in commands, (pragma, commands)


def test_init_command_pragmas_take_effect(tmp_path: Path) -> None:
    entry = database(tmp_path / "app.sqlite3")
    connection = sqlite3.connect(entry["NAME"], timeout=entry["OPTIONS"]["timeout"])
    try:
        for command in init_commands(entry):
            connection.execute(command)
        got = {
            name: connection.execute(f"PRAGMA {name}").fetchone()[0] for name in EXPECTED_PRAGMAS
        }
    finally:
        connection.close()
    assert got == EXPECTED_PRAGMAS


def test_database_options(tmp_path: Path) -> None:
    entry = database(
        tmp_path / "app.sqlite3",
        timeout=2.5,
        synchronous="full",
        mmap_size=0,
        journal_size_limit="16MiB",
        cache_size=-2000,
        TEST={"NAME": str(tmp_path / "test.sqlite3")},
        CONN_MAX_AGE=60,
        cached_statements=256,
        init_command="PRAGMA optimize",
    )
    assert entry["TEST"] == {"NAME": str(tmp_path / "test.sqlite3")}
    assert entry["CONN_MAX_AGE"] == 60
    assert entry["OPTIONS"]["cached_statements"] == 256
    assert entry["OPTIONS"]["timeout"] == 2.5
    commands = init_commands(entry)
    assert "PRAGMA busy_timeout=2500" in commands
    assert "PRAGMA synchronous=FULL" in commands
    assert "PRAGMA mmap_size=0" in commands
    assert "PRAGMA journal_size_limit=16777216" in commands
    assert "PRAGMA cache_size=-2000" in commands
    assert commands[-1] == "PRAGMA optimize", "the caller's init_command runs last"
    assert (
        database(tmp_path / "x", cache_size="8MiB")["OPTIONS"]["init_command"].count(
            "PRAGMA cache_size=-8192"
        )
        == 1
    )
    assert "synchronous=OFF" in database(tmp_path / "x", synchronous=0)["OPTIONS"]["init_command"]


def test_options_map_is_merged(tmp_path: Path) -> None:
    entry = database(tmp_path / "x", OPTIONS={"transaction_mode": "EXCLUSIVE", "timeout": 9})
    assert entry["OPTIONS"]["transaction_mode"] == "EXCLUSIVE"
    assert entry["OPTIONS"]["timeout"] == 9
    assert "init_command" in entry["OPTIONS"]


@pytest.mark.parametrize(
    "options",
    [
        {"synchronous": "SOMETIMES"},
        {"synchronous": 7},
        {"mmap_size": "lots"},
        {"mmap_size": -1},
        {"journal_size_limit": "12 parsecs"},
        {"timeout": -1},
        {"ENGINE": "django.db.backends.postgresql"},
    ],
)
def test_bad_options_are_improperly_configured(tmp_path: Path, options: dict[str, Any]) -> None:
    with pytest.raises(ImproperlyConfigured):
        database(tmp_path / "x", **options)


@pytest.mark.parametrize(
    ("version", "engine"),
    [
        ((4, 2, 20, "final", 0), "gateway_client.django.sqlite_backend"),
        ((5, 0, 9, "final", 0), "gateway_client.django.sqlite_backend"),
        ((5, 1, 0, "final", 0), "django.db.backends.sqlite3"),
        ((6, 0, 0, "final", 0), "django.db.backends.sqlite3"),
    ],
)
def test_engine_depends_on_the_django_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, version: tuple[Any, ...], engine: str
) -> None:
    monkeypatch.setattr(django, "VERSION", version)
    entry = database(tmp_path / "x")
    assert entry["ENGINE"] == engine
    # The same OPTIONS either way: the old-Django backend reads them.
    assert entry["OPTIONS"]["transaction_mode"] == "IMMEDIATE"


# --- the system check ---------------------------------------------------------------------------


@pytest.mark.parametrize("version", [(3, 40, 1), (3, 51, 2), (3, 7, 0)])
def test_old_sqlite_gets_w001(
    monkeypatch: pytest.MonkeyPatch, version: tuple[int, int, int]
) -> None:
    monkeypatch.setattr(sqlite3, "sqlite_version_info", version)
    messages = check_sqlite_version(None)
    assert [m.id for m in messages] == [W001]
    warning = messages[0]
    assert warning.level == checks.WARNING
    assert ".".join(map(str, version)) in warning.msg
    assert "WAL-reset" in warning.msg
    assert "LD_LIBRARY_PATH" in warning.hint and "[exec]" in warning.hint


@pytest.mark.parametrize("version", [(3, 51, 3), (3, 53, 4), (4, 0, 0)])
def test_new_sqlite_passes_the_check(
    monkeypatch: pytest.MonkeyPatch, version: tuple[int, int, int]
) -> None:
    monkeypatch.setattr(sqlite3, "sqlite_version_info", version)
    assert check_sqlite_version(None) == []


def test_database_registers_the_check_once(tmp_path: Path) -> None:
    database(tmp_path / "a")
    database(tmp_path / "b")
    registry = checks.registry.registry
    registered = [c for c in registry.registered_checks if c is check_sqlite_version]
    assert len(registered) == 1
    # Not tagged "database": those only run with `check --database`.
    assert checks.Tags.database not in registered[0].tags


def test_app_config() -> None:
    from gateway_client.django.apps import GatewayClientConfig

    assert GatewayClientConfig.name == "gateway_client.django"
    assert GatewayClientConfig.label == "gateway_client"


# --- real Django processes on a gateway-created database ----------------------------------------


def django_env(db: Path, *, engine: str | None = None, new_sqlite: bool = True) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE", "PYTHONPATH")}
    env["GATEWAY_TEST_DB"] = str(db)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    if engine:
        env["GATEWAY_TEST_ENGINE"] = engine
    if new_sqlite:
        env["LD_LIBRARY_PATH"] = str(build_dir())
    else:
        env.pop("LD_LIBRARY_PATH", None)
    return env


def manage(python: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(python), "manage.py", *args],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, (
        f"manage.py {' '.join(args)} exited {result.returncode}\n"
        f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    )
    return result


def venv_python(name: str) -> Path:
    python = VENVS[name]
    if not python.exists():
        pytest.skip(f"{python} does not exist (scripts/setup creates it)")
    return python


@pytest.mark.parametrize(
    ("venv", "engine"),
    [
        pytest.param("django6", None, id="django6"),
        pytest.param("django52", None, id="django52"),
        pytest.param(
            "django6", "gateway_client.django.sqlite_backend", id="django6-legacy-backend"
        ),
    ],
)
def test_django_on_the_gateway_database(
    gateway: GatewayProcess, venv: str, engine: str | None
) -> None:
    python = venv_python(venv)
    db = gateway.db_path("main")
    env = django_env(db, engine=engine)

    manage(python, env, "migrate", "--no-input", "-v", "0")
    report = json.loads(manage(python, env, "gateway_smoke", "--count", "25").stdout)

    assert report["titles"] == [f"note {i}" for i in range(25)] + ["single"]
    assert report["pragmas"] == EXPECTED_PRAGMAS
    assert tuple(map(int, report["sqlite_version"].split("."))) >= MIN_SQLITE, (
        f"Django loaded SQLite {report['sqlite_version']}: is libsqlite3.so.0 in {build_dir()}?"
    )
    assert report["immediate"], "atomic() did not start with BEGIN IMMEDIATE"
    assert report["lock_free_after"]
    assert report["engine"] == (engine or "django.db.backends.sqlite3")

    check = manage(python, env, "check")
    assert W001 not in check.stdout + check.stderr

    # Django wrote into the gateway's WAL database; the gateway stops cleanly and the file is sound.
    assert gateway.stop() == 0
    connection = sqlite3.connect(db)
    try:
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert connection.execute("SELECT count(*) FROM notes_note").fetchone()[0] == 26
    finally:
        connection.close()


def _sqlite_version_without_build_lib(python: Path) -> tuple[int, ...]:
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    out = subprocess.run(
        [str(python), "-c", "import sqlite3; print(sqlite3.sqlite_version)"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return tuple(int(part) for part in out.strip().split("."))


def test_check_warns_in_a_django_process_with_old_sqlite(tmp_path: Path) -> None:
    python = venv_python("django6")
    version = _sqlite_version_without_build_lib(python)
    if version >= MIN_SQLITE:
        pytest.skip(f"the system SQLite ({version}) is new enough; nothing to warn about")
    result = manage(python, django_env(tmp_path / "app.sqlite3", new_sqlite=False), "check")
    output = result.stdout + result.stderr
    assert W001 in output, output
    assert "LD_LIBRARY_PATH" in output
