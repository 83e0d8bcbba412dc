"""GatewayTaskBackend and the worker under real Django, one subprocess per project virtualenv.

``.venv`` has Django 6 (``django.tasks``), ``.venv-django52`` has Django 5.2 with the
``django-tasks`` backport (``django_tasks``). In each, ``tests/django_tasks_project`` runs a
worker (``manage.py gateway_worker`` on Django 6, ``python -m gateway_client.worker`` with
``DJANGO_SETTINGS_MODULE`` on 5.2, so both entry points are covered) and the ``tasks_smoke``
command, which enqueues through Django's API and prints what ``get_result`` returned.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from gateway_harness import REPO, GatewayProcess, build_dir
from queue_harness import WorkerPool

PROJECT = Path(__file__).resolve().parent / "django_tasks_project"
VENVS = {
    "django6": REPO / ".venv" / "bin" / "python",
    "django52": REPO / ".venv-django52" / "bin" / "python",
}
FRAMEWORK = {"django6": "django.tasks", "django52": "django_tasks"}


def venv_python(name: str) -> Path:
    python = VENVS[name]
    if not python.exists():
        pytest.skip(f"{python} does not exist (scripts/setup creates it)")
    probe = subprocess.run(
        [str(python), "-c", f"import {FRAMEWORK[name]}"], capture_output=True, check=False
    )
    if probe.returncode != 0:
        pytest.skip(f"{python} has no {FRAMEWORK[name]} (the django-tasks package on Django < 6)")
    return python


def project_env(gateway: GatewayProcess, records: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE", "PYTHONPATH")}
    env.update(
        GATEWAY_TEST_SOCKET=gateway.socket_path,
        GATEWAY_TEST_DB=str(gateway.db_path("main")),
        QUEUE_TEST_DIR=str(records),
        LD_LIBRARY_PATH=str(build_dir()),
        PYTHONDONTWRITEBYTECODE="1",
    )
    return env


def manage(python: Path, env: dict[str, str], *args: str) -> str:
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
    return result.stdout


def when(value: str | None) -> dt.datetime:
    assert value is not None
    return dt.datetime.fromisoformat(value)


@pytest.mark.parametrize("venv", ["django6", "django52"])
def test_django_tasks_through_the_gateway(
    gateway: GatewayProcess, workers: WorkerPool, venv: str
) -> None:
    python = venv_python(venv)
    env = project_env(gateway, workers.records)
    manage(python, env, "check", "--fail-level", "WARNING")
    worker_args = ["--queue", "default", "--queue", "prio", "--lease-seconds", "5"]
    worker_args += ["--dequeue-wait", "1"]
    if venv == "django6":
        command = [str(python), "manage.py", "gateway_worker", *worker_args]
        extra_env = {**env, "PYTHONPATH": str(PROJECT)}
    else:
        command = [str(python), "-m", "gateway_client.worker", *worker_args]
        extra_env = {
            **env,
            "PYTHONPATH": str(PROJECT),
            "DJANGO_SETTINGS_MODULE": "tasksite.settings",
        }
    run = workers.start(gateway.socket_path, command=command, env=extra_env, cwd=PROJECT)
    run.wait_children(1)

    report: dict[str, Any] = json.loads(manage(python, env, "tasks_smoke"))

    assert report["supports"] == {
        "supports_defer": True,
        "supports_priority": True,
        "supports_get_result": True,
        "supports_async_task": True,
    }
    add = report["add"]
    assert (add["status"], add["return_value"], add["attempts"]) == ("SUCCESSFUL", 5, 1)
    assert add["task"] == "jobs.tasks.add" and add["backend"] == "default"
    assert add["is_finished"] and add["aware"]
    assert len(add["worker_ids"]) == 1 and add["worker_ids"][0].endswith(f":{run.children()[0]}"), (
        "the default worker id is hostname:pid"
    )
    assert when(add["enqueued_at"]) <= when(add["started_at"]) <= when(add["finished_at"])
    assert add["last_attempted_at"] == add["started_at"]

    assert report["whoami"]["return_value"] == {
        "id": report["whoami"]["id"],
        "attempt": 1,
        "tag": "ctx",
    }, "takes_context tasks get a TaskContext for their own result"
    assert report["async_mul"]["return_value"] == 42

    explode = report["explode"]
    assert explode["status"] == "FAILED" and explode["return_value"] == "<Task failed>"
    (error,) = explode["errors"]
    assert error["class"] == "builtins.KeyError"
    assert "KeyError: 'missing-key'" in error["tb"] and "in explode" in error["tb"]

    deferred = report["deferred"]
    assert report["deferred_enqueued"]["status"] == "READY"
    assert report["deferred_enqueued"]["state_now"] == "READY"
    assert deferred["status"] == "SUCCESSFUL" and deferred["return_value"] == 2
    # The gateway keeps times in milliseconds.
    run_after = when(report["deferred_run_after"]) - dt.timedelta(milliseconds=1)
    assert when(deferred["started_at"]) >= run_after

    aenqueued, afetched = report["aenqueue"]["enqueued"], report["aenqueue"]["fetched"]
    assert aenqueued["status"] == "READY" and aenqueued["enqueued_at"] is not None
    assert (afetched["status"], afetched["return_value"]) == ("SUCCESSFUL", 30)

    assert report["ordered_last"]["queue"] == "prio"
    assert report["ordered_last"]["priority"] == -100
    order = (workers.records / "order.txt").read_text().split()
    assert order == ["p50", "p10a", "p10b", "p0", "p-5", "last"]
    assert report["refreshed_status"] == "SUCCESSFUL"
    assert report["missing"] == "TaskResultDoesNotExist"

    signals = (workers.records / "signals.txt").read_text().splitlines()
    for name, final in (("add", "SUCCESSFUL"), ("explode", "FAILED"), ("whoami", "SUCCESSFUL")):
        job_id = report[name]["id"]
        assert any(line.startswith(f"started {job_id} RUNNING") for line in signals), signals
        assert any(line.startswith(f"finished {job_id} {final}") for line in signals), signals

    assert run.stop() == 0
    # Every job that started was also finished with its stored outcome, those the worker had
    # prefetched and reported without waiting included (the "prio" jobs come in one answer).
    signals = (workers.records / "signals.txt").read_text().splitlines()
    events = [line.split() for line in signals]
    started = {job_id for event, job_id, *_ in events if event == "started"}
    finished = {job_id: status for event, job_id, status, *_ in events if event == "finished"}
    assert set(finished) == started, signals
    assert finished[report["ordered_last"]["id"]] == "SUCCESSFUL"
    log = run.log_text()
    assert f"job={add['id']}" in log and "task=jobs.tasks.add" in log
