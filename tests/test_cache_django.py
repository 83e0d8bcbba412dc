"""GatewayCache under real Django: the suite in tests/django_cache_project, once per Django version.

Each run is a separate pytest process in one of the project virtualenvs (.venv: Django 6 on
Python 3.13, .venv-django52: Django 5.2 on Python 3.11), against a gateway of its own, with
LD_LIBRARY_PATH pointing at the gateway's libsqlite3.so.0 so that direct reads use the same
SQLite as the server. The runs are mostly waiting for timeouts to pass, so both go at once.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from gateway_harness import REPO, GatewayProcess, build_dir

SUITE = Path(__file__).resolve().parent / "django_cache_project"
VENVS = {
    "django6": REPO / ".venv" / "bin" / "python",
    "django52": REPO / ".venv-django52" / "bin" / "python",
}
SUITE_TIMEOUT = 300


def suite_env(socket_path: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE", "PYTHONPATH")}
    env["GATEWAY_TEST_SOCKET"] = socket_path
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["LD_LIBRARY_PATH"] = str(build_dir())
    return env


@pytest.fixture(scope="module")
def suite_runs() -> Iterator[dict[str, tuple[subprocess.CompletedProcess[str], str]]]:
    """Run the suite under every available virtualenv at once; ``{venv: (result, gateway log)}``."""
    folders: list[Path] = []
    gateways: dict[str, GatewayProcess] = {}
    running: dict[str, subprocess.Popen[str]] = {}
    results: dict[str, tuple[subprocess.CompletedProcess[str], str]] = {}
    try:
        for name, python in VENVS.items():
            if not python.exists():
                continue
            folder = Path(tempfile.mkdtemp(prefix=f"gw-{name}-", dir="/tmp"))
            folders.append(folder)
            gateways[name] = GatewayProcess(folder).start()
            running[name] = subprocess.Popen(
                [str(python), "-m", "pytest", "-q", str(SUITE)],
                cwd=SUITE,
                env=suite_env(gateways[name].socket_path),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        for name, process in running.items():
            try:
                stdout, stderr = process.communicate(timeout=SUITE_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                stdout, stderr = process.communicate()
                stderr += f"\n(killed after {SUITE_TIMEOUT} s)"
            completed = subprocess.CompletedProcess(
                process.args, process.returncode, stdout, stderr
            )
            results[name] = (completed, gateways[name].log_text())
        yield results
    finally:
        for process in running.values():
            if process.poll() is None:
                process.kill()
                process.wait()
        for gateway in gateways.values():
            gateway.kill()
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize("venv", sorted(VENVS))
def test_cache_suite_under_django(
    suite_runs: dict[str, tuple[subprocess.CompletedProcess[str], str]], venv: str
) -> None:
    if venv not in suite_runs:
        pytest.skip(f"{VENVS[venv]} does not exist (scripts/setup creates it)")
    result, gateway_log = suite_runs[venv]
    summary = (result.stdout.strip().splitlines() or ["(no output)"])[-1]
    print(f"{venv}: {summary}")
    assert result.returncode == 0, (
        f"the GatewayCache suite failed under {venv} (exit {result.returncode})\n"
        f"stdout:\n{result.stdout[-20000:]}\nstderr:\n{result.stderr[-5000:]}\n"
        f"gateway log:\n{gateway_log[-4000:]}"
    )
    assert " passed" in summary and "failed" not in summary
