"""The example site (``examples/mysite`` with ``examples/mysite.toml``), end to end over HTTP.

The site runs as it is configured: the gateway on the config's ``[server]``, ``[databases]``,
``[replica]`` and ``[restore]`` sections (its relative paths land in a temporary folder), and the
commands of its ``[exec]`` section (migrations, gunicorn, the job worker) with the environment
``[exec]`` gives them: ``GATEWAY_SOCKET``, ``GATEWAY_DB_MAIN``, ``LD_LIBRARY_PATH`` and ``env``.
The only change is gunicorn's port, a free one instead of 8000.

Two ways to start it:

- ``by-hand``: the gateway without ``[exec]``, then each command as a subprocess, as a developer
  does while ``[exec]`` is not available;
- ``exec``: the gateway with ``[exec]``, which starts the commands itself; skipped while
  ``gateway check-config`` does not accept the section or the gateway logs that it does not
  start ``[exec]`` commands.

Each test stops the site with SIGTERM, checks that everything exited within 10 s, and restores
the main database from the replica to find the note it wrote. Every process started, and every
process those started, is killed at teardown.
"""

from __future__ import annotations

import contextlib
import http.cookiejar
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import tomllib
from gateway_client import Client
from gateway_harness import (
    REPO,
    GatewayProcess,
    build_dir,
    render_toml,
    run_gateway_command,
)

EXAMPLES = REPO / "examples"
CONFIG = EXAMPLES / "mysite.toml"
CONFIGURED_BIND = "127.0.0.1:8000"
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
VENV_BIN = Path(sys.executable).parent


def mysite_config() -> dict[str, Any]:
    with CONFIG.open("rb") as f:
        return tomllib.load(f)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def with_port(command: list[str], port: int) -> list[str]:
    """``command`` with gunicorn's configured address replaced by 127.0.0.1:``port``."""
    assert any(CONFIGURED_BIND in arg for arg in command), (
        f"[exec] command no longer binds {CONFIGURED_BIND}; update this test"
    )
    return [arg.replace(CONFIGURED_BIND, f"127.0.0.1:{port}") for arg in command]


def descendants(pid: int) -> list[int]:
    """Every living process below ``pid`` (Linux /proc), children first."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found: list[int] = []
    queue = [pid]
    while queue:
        for child in children.get(queue.pop(0), []):
            found.append(child)
            queue.append(child)
    return found


@dataclass
class Site:
    """A running example site: its gateway, the processes started for it, its HTTP address."""

    gateway: GatewayProcess
    base_url: str
    folder: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def logs(self) -> str:
        parts = [f"--- gateway:\n{self.gateway.log_text()}{self.gateway.stdout_text()}"]
        for name in self.processes:
            path = self.folder / f"{name}.log"
            text = path.read_text(errors="replace") if path.exists() else ""
            parts.append(f"--- {name}:\n{text}")
        return "\n".join(parts)

    def kill_everything(self) -> None:
        """SIGKILL every process of the site that is still alive, children first."""
        roots = [p.pid for p in self.processes.values()]
        if self.gateway.proc is not None:
            roots.append(self.gateway.pid)
        for pid in [d for root in roots for d in descendants(root)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
            process.wait(10)
        self.gateway.kill()


def gateway_overrides(config: dict[str, Any], exec_section: dict[str, Any] | None) -> dict:
    overrides = {key: value for key, value in config.items() if key != "exec"}
    if exec_section is not None:
        overrides["exec"] = exec_section
    return overrides


def exec_environment(gateway: GatewayProcess, extra: dict[str, str]) -> dict[str, str]:
    """The environment ``[exec]`` gives its commands, plus the virtualenv's bin on PATH."""
    env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE",)}
    env.update(extra)
    env.update(
        GATEWAY_SOCKET=gateway.socket_path,
        GATEWAY_DB_MAIN=str(gateway.db_path("main")),
        LD_LIBRARY_PATH=os.pathsep.join(
            p for p in (str(build_dir()), os.environ.get("LD_LIBRARY_PATH", "")) if p
        ),
        PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        PYTHONDONTWRITEBYTECODE="1",
    )
    return env


def wait_http(site: Site, deadline: float) -> None:
    """Return once GET / answers; fail with the logs if a process exits or time runs out."""
    while time.monotonic() < deadline:
        for name, process in site.processes.items():
            if process.poll() is not None:
                pytest.fail(f"{name} exited with {process.returncode}\n{site.logs()}")
        if site.gateway.proc is not None and site.gateway.proc.poll() is not None:
            pytest.fail(f"the gateway exited with {site.gateway.proc.returncode}\n{site.logs()}")
        try:
            with urllib.request.urlopen(site.base_url + "/", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.1)
    pytest.fail(f"the site did not answer within {START_TIMEOUT} s\n{site.logs()}")


def start_by_hand(folder: Path, config: dict[str, Any], port: int, started: list[Site]) -> None:
    exec_section = config["exec"]
    gateway = GatewayProcess(folder, gateway_overrides(config, None), name="mysite")
    site = Site(gateway, f"http://127.0.0.1:{port}", folder)
    started.append(site)
    gateway.start()
    cwd = EXAMPLES / exec_section.get("cwd", ".")
    env = exec_environment(gateway, exec_section.get("env", {}))
    commands = {
        "web": with_port(exec_section["command"], port),
        "worker": list(exec_section["worker"]),
    }
    for name, command in commands.items():
        with open(folder / f"{name}.log", "wb") as log:
            site.processes[name] = subprocess.Popen(
                command,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )


def exec_supported(folder: Path, overrides: dict[str, Any]) -> bool:
    probe = folder / "probe.toml"
    probe.write_text(render_toml(overrides))
    return run_gateway_command(["check-config", "--config", str(probe)]).returncode == 0


def start_under_exec(folder: Path, config: dict[str, Any], port: int, started: list[Site]) -> None:
    exec_section = dict(config["exec"])
    exec_section["cwd"] = str(EXAMPLES / exec_section.get("cwd", "."))
    exec_section["command"] = with_port(exec_section["command"], port)
    overrides = gateway_overrides(config, exec_section)
    if not exec_supported(folder, overrides):
        pytest.skip("this gateway does not accept examples/mysite.toml's [exec] section yet")
    path = f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    gateway = GatewayProcess(
        folder, overrides, name="mysite", env={"PATH": path, "PYTHONDONTWRITEBYTECODE": "1"}
    )
    site = Site(gateway, f"http://127.0.0.1:{port}", folder)
    started.append(site)
    gateway.start()
    if "event=exec_not_available" in gateway.log_text():
        pytest.skip("this gateway reads [exec] but does not start its commands yet")


@pytest.fixture(params=["by-hand", "exec"])
def site(request: pytest.FixtureRequest, gateway_dir: Path) -> Iterator[Site]:
    if not (VENV_BIN / "gunicorn").exists():
        pytest.fail(f"{VENV_BIN}/gunicorn is missing: the example site needs gunicorn>=23")
    config = mysite_config()
    start = start_by_hand if request.param == "by-hand" else start_under_exec
    started: list[Site] = []
    try:
        start(gateway_dir, config, free_port(), started)
        (site,) = started
        wait_http(site, time.monotonic() + START_TIMEOUT)
        yield site
    finally:
        for site in started:
            site.kill_everything()


# --- the browser's side --------------------------------------------------------------------------


class Browser:
    """An HTTP client with cookies that follows redirects and knows Django's CSRF form field."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )

    def get(self, path: str) -> tuple[int, str, str]:
        """``(status, final path, body)`` of GET ``path``."""
        return self._open(urllib.request.Request(self.base_url + path))

    def post(self, path: str, form: dict[str, str], csrf_from: str) -> tuple[int, str, str]:
        """POST ``form`` plus the CSRF token of the page ``csrf_from`` (fetched first)."""
        _, _, page = self.get(csrf_from)
        match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
        assert match, f"no CSRF token on {csrf_from}"
        data = urllib.parse.urlencode({**form, "csrfmiddlewaretoken": match.group(1)}).encode()
        return self._open(urllib.request.Request(self.base_url + path, data=data))

    def _open(self, request: urllib.request.Request) -> tuple[int, str, str]:
        try:
            with self.opener.open(request, timeout=10) as response:
                final = urllib.parse.urlsplit(response.geturl()).path
                return response.status, final, response.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, urllib.parse.urlsplit(e.geturl()).path, e.read().decode()


def element(page: str, element_id: str) -> str:
    """The text of the element with ``id="element_id"`` in ``page``."""
    match = re.search(rf'id="{element_id}"[^>]*>([^<]*)<', page)
    assert match, f'no element id="{element_id}" in the page:\n{page}'
    return match.group(1).strip()


def attribute(page: str, element_id: str, name: str) -> str:
    """The attribute ``name`` of the element with ``id="element_id"`` in ``page``."""
    match = re.search(rf'id="{element_id}" {name}="([^"]*)"', page)
    assert match, f'no element id="{element_id}" with {name} in the page:\n{page}'
    return match.group(1)


# --- the tests -----------------------------------------------------------------------------------


def test_settings_default_to_the_paths_of_mysite_toml() -> None:
    """Run without the gateway's variables, the settings use what examples/mysite.toml says."""
    config = mysite_config()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "DJANGO_"))}
    env.update(DJANGO_SETTINGS_MODULE="mysite.settings", PYTHONDONTWRITEBYTECODE="1")
    code = (
        "from django.conf import settings as s; print(s.GATEWAY_SOCKET); print(s.GATEWAY_DB_MAIN)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=EXAMPLES / config["exec"]["cwd"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    socket_path, db_path = result.stdout.split()
    assert Path(socket_path) == EXAMPLES / config["server"]["socket"]
    assert Path(db_path) == EXAMPLES / config["databases"]["main"]["path"]


def test_example_site(site: Site) -> None:
    browser = Browser(site.base_url)
    gateway = Client(site.gateway.socket_path)

    # GET /, and the view counter goes up by one per view, through the gateway's cache.
    status, _, first = browser.get("/")
    assert status == 200 and "<h1>Notes</h1>" in first
    incr_before = gateway.stats()["requests_by_op"].get("cache.incr", 0)
    _, _, second = browser.get("/")
    assert int(element(second, "views")) == int(element(first, "views")) + 1
    assert gateway.stats()["requests_by_op"].get("cache.incr", 0) == incr_before + 1

    # The statistics come from the cache until a note is added.
    computed_at = attribute(second, "stats-computed-at", "datetime")
    notes_before = int(element(second, "stats-notes"))
    _, _, third = browser.get("/")
    assert attribute(third, "stats-computed-at", "datetime") == computed_at, "get_or_set recomputed"

    # A POST writes a row; the page and the admin show it.
    text = f"the quick brown fox {time.time_ns()}"
    status, final, page = browser.post("/notes/", {"text": text}, csrf_from="/")
    assert (status, final) == (200, "/"), f"{status} {final}\n{page}"
    assert f"<li>{text} " in page
    assert int(element(page, "stats-notes")) == notes_before + 1
    assert attribute(page, "stats-computed-at", "datetime") != computed_at
    assert browser.post("/notes/", {"text": ""}, csrf_from="/")[0] == 400

    # A job enqueued from the page runs in the worker; its page and the home page show the result.
    status, final, page = browser.post("/count/", {}, csrf_from="/")
    assert status == 200 and final.startswith("/jobs/"), f"{status} {final}\n{page}"
    deadline = time.monotonic() + 10
    while element(page, "job-status") != "SUCCESSFUL" and time.monotonic() < deadline:
        assert element(page, "job-status") in ("READY", "RUNNING"), page
        time.sleep(0.1)
        page = browser.get(final)[2]
    assert element(page, "job-status") == "SUCCESSFUL", f"{page}\n{site.logs()}"
    assert int(element(page, "job-notes")) == notes_before + 1
    assert int(element(page, "job-words")) == 5 * (notes_before + 1)
    assert element(browser.get("/")[2], "job-status") == "SUCCESSFUL"
    assert browser.get("/jobs/0123456789abcdef0123456789abcdef/")[0] == 404

    # The admin: its login page and CSS, and the example superuser sees the note.
    status, _, page = browser.get("/admin/login/")
    assert status == 200 and 'name="password"' in page
    assert browser.get("/static/admin/css/base.css")[0] == 200
    login = {"username": "admin", "password": "admin", "next": "/admin/"}
    status, final, page = browser.post("/admin/login/", login, csrf_from="/admin/login/")
    assert (status, final) == (200, "/admin/") and "Site administration" in page
    assert text in browser.get("/admin/notes/note/")[2]

    gateway.close()
    stop_and_check_replica(site, text)


def stop_and_check_replica(site: Site, text: str) -> None:
    """SIGTERM stops the site within 10 s, and the replica holds the note written last."""
    started = time.monotonic()
    if site.processes:  # by hand: the app processes first, as [exec] does
        for process in site.processes.values():
            process.send_signal(signal.SIGTERM)
        for name, process in site.processes.items():
            code = process.wait(STOP_TIMEOUT)
            assert code == 0, f"{name} exited with {code}\n{site.logs()}"
    code = site.gateway.stop(signal.SIGTERM, timeout=STOP_TIMEOUT)
    assert code == 0, site.logs()
    assert time.monotonic() - started < STOP_TIMEOUT

    restored = site.folder / "restored.sqlite3"
    result = run_gateway_command(
        ["restore", "--config", str(site.gateway.config_path), "--db", "main", "-o", str(restored)]
    )
    assert result.returncode == 0, result.stderr
    with contextlib.closing(sqlite3.connect(restored)) as db:
        rows = db.execute("SELECT text FROM notes_note WHERE text = ?", (text,)).fetchall()
    assert rows == [(text,)]
