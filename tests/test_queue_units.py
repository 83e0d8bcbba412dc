"""The Python side of the queue without a gateway: job maps, enqueue args, options, the log line,
task import, and the Django job-to-TaskResult mapping (in a Django 6 subprocess)."""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from gateway_client import ProtocolError
from gateway_client.queue import Job, enqueue_args
from gateway_client.worker import joblog
from gateway_client.worker.errors import (
    TaskTimeout,
    WorkerShutdown,
    class_path,
    importable_class_path,
)
from gateway_client.worker.joblog import logfmt
from gateway_client.worker.options import WorkerOptions, add_arguments, options_from_namespace
from gateway_client.worker.runner import import_task, json_compatible
from gateway_harness import REPO

JOB_MAP = {
    "id": "a" * 32,
    "queue": "default",
    "task": "queue_tasks.add",
    "args": [1, 2],
    "kwargs": {},
    "priority": 0,
    "state": "RUNNING",
    "run_after": None,
    "attempts": 1,
    "max_attempts": 3,
    "enqueued_at": 1.5,
    "started_at": 2.5,
    "finished_at": None,
    "last_attempted_at": 2.5,
    "worker_ids": ["w:1"],
    "errors": [
        {
            "attempt": 1,
            "at": 2.0,
            "exception_class_path": "gateway.LeaseExpired",
            "traceback": "",
            "worker_id": "w:0",
        }
    ],
    "return_value": None,
    "unique_key": None,
    "lease_token": "t",
    "lease_expires_at": 62.5,
    "some_new_field": True,
}


def test_job_from_map() -> None:
    job = Job.from_map(JOB_MAP)
    assert (job.id, job.state, job.attempts, job.max_attempts) == ("a" * 32, "RUNNING", 1, 3)
    assert job.errors[0].exception_class_path == "gateway.LeaseExpired"
    assert (job.lease_token, job.lease_expires_at) == ("t", 62.5)
    assert job.raw["some_new_field"] is True and not job.is_finished
    for bad in (None, [], {"id": 1, "task": "x", "state": "READY"}, {"id": "x", "task": "y"}):
        with pytest.raises(ProtocolError):
            Job.from_map(bad)


def test_enqueue_args_leaves_out_defaults() -> None:
    assert enqueue_args("a.b") == {"task": "a.b", "args": [], "kwargs": {}}
    full = enqueue_args(
        "a.b",
        args=(1,),
        kwargs={"x": 1},
        queue="q",
        priority=-3,
        run_after=12,
        max_attempts=2,
        backoff=1,
        unique_key="k",
    )
    assert full == {
        "task": "a.b",
        "args": [1],
        "kwargs": {"x": 1},
        "queue": "q",
        "priority": -3,
        "run_after": 12.0,
        "max_attempts": 2,
        "backoff": 1.0,
        "unique_key": "k",
    }
    with pytest.raises(ValueError):
        enqueue_args("")


def test_worker_options() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser, socket_required=False)
    namespace = parser.parse_args(
        ["--socket", "/s", "-q", "high", "-q", "low", "-c", "3", "--task-timeout", "2.5"]
    )
    options = options_from_namespace(namespace)
    assert options.queues == ("high", "low") and options.concurrency == 3
    assert options.task_timeout == 2.5 and options.effective_heartbeat_interval == 20.0
    assert options_from_namespace({"socket": None}, socket="/t").queues == ("default",)
    assert options.prefetch == 64
    assert (
        options_from_namespace(parser.parse_args(["--socket", "/s", "--prefetch", "1"])).prefetch
        == 1
    )
    for bad in (
        {"concurrency": 0},
        {"lease_seconds": -1},
        {"heartbeat_interval": 90},
        {"max_tasks_per_child": 0},
        {"queues": ("",)},
        {"prefetch": 0},
        {"prefetch": 101},
    ):
        with pytest.raises(ValueError):
            WorkerOptions(socket="/s", **bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        options_from_namespace({}, socket=None)


def test_logfmt_quotes_what_needs_it() -> None:
    assert logfmt(a="x", b=1, c=0.12345, d=None) == "a=x b=1 c=0.123"
    assert logfmt(e='say "hi"', f="", g="a=b") == 'e="say \\"hi\\"" f="" g="a=b"'


def test_job_lines_read_the_same_written_directly_or_as_records(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    monkeypatch.setattr(joblog, "_own_handler", None)
    monkeypatch.setattr(joblog.logger, "handlers", [])
    monkeypatch.setattr(joblog.logger, "filters", [])
    monkeypatch.setattr(joblog.logger, "propagate", True)
    monkeypatch.setattr(joblog.logger, "level", joblog.logger.level)
    monkeypatch.setattr(logging.getLogger("gateway_client"), "handlers", [])
    joblog.configure_logging()
    job = Job.from_map({"id": "ab" * 16, "task": "t.x", "state": "RUNNING", "queue": "a b"})
    fields = {"state": "FAILED", "duration": 0.25, "worker_id": "w:1", "error": "a.B"}
    joblog.log_job(job, **fields)  # written by the handler itself
    joblog.logger.addFilter(lambda record: True)  # now only a record reaches the handler
    joblog.log_job(job, **fields)
    direct, via_record = stream.getvalue().splitlines()
    assert direct.split(" ", 2)[2] == via_record.split(" ", 2)[2], (direct, via_record)
    assert via_record.split(" ", 2)[2] == (
        f'WARNING [{os.getpid()}] job={"ab" * 16} task=t.x queue="a b" state=FAILED '
        "attempt=0 duration=0.250 worker=w:1 error=a.B"
    )
    assert len(direct.split(" ", 2)[:2]) == 2 and direct[:4].isdigit()


def test_import_task(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pkg_for_import_test").mkdir()
    (tmp_path / "pkg_for_import_test" / "__init__.py").write_text("")
    (tmp_path / "pkg_for_import_test" / "mod.py").write_text(
        "class Holder:\n    @staticmethod\n    def run():\n        return 1\n"
        "def plain():\n    return 2\n"
    )
    (tmp_path / "pkg_for_import_test" / "broken.py").write_text("import no_such_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert import_task("pkg_for_import_test.mod.plain")() == 2
    assert import_task("pkg_for_import_test.mod.Holder.run")() == 1
    for path in ("pkg_for_import_test.mod.nope", "nope_module.x", "plain", "a..b"):
        with pytest.raises(ImportError):
            import_task(path)
    with pytest.raises(ModuleNotFoundError, match="no_such_dependency"):
        import_task("pkg_for_import_test.broken.x")


def test_json_compatible() -> None:
    assert json_compatible((1, [2, (3,)], {"a": None})) == [1, [2, [3]], {"a": None}]
    for bad in ({1, 2}, b"bytes", float("nan"), object()):
        with pytest.raises((TypeError, ValueError)):
            json_compatible(bad)


def test_error_class_paths_import() -> None:
    assert class_path(TaskTimeout) == "gateway_client.worker.errors.TaskTimeout"
    assert issubclass(TaskTimeout, TimeoutError)
    assert class_path(WorkerShutdown) == "gateway_client.worker.errors.WorkerShutdown"
    assert importable_class_path("gateway.LeaseExpired") == (
        "gateway_client.worker.errors.LeaseExpired"
    )
    assert importable_class_path("builtins.KeyError") == "builtins.KeyError"


MAPPING_SCRIPT = r"""
import json, sys
import django
from django.conf import settings
settings.configure(
    USE_TZ=sys.argv[1] == "tz",
    TIME_ZONE="UTC",
    INSTALLED_APPS=["gateway_client.django"],
    TASKS={"default": {"BACKEND": "gateway_client.django.GatewayTaskBackend",
                       "OPTIONS": {"socket": "/nonexistent.sock"}}},
)
django.setup()
from django.tasks import task_backends
from gateway_client.queue import Job
backend = task_backends["default"]
job = json.loads(sys.stdin.read())
out = {}
for state in ("SCHEDULED", "READY", "RUNNING", "SUCCESSFUL", "FAILED", "CANCELLED"):
    result = backend.result_for(Job.from_map({**job, "state": state, "return_value": [1]}))
    out[state] = str(result.status)
result = backend.result_for(Job.from_map({**job, "state": "SUCCESSFUL", "return_value": [1]}))
out["return_value"] = result.return_value
out["started_at"] = result.started_at.isoformat()
out["error_class"] = result.errors[0].exception_class.__name__
out["worker_ids"] = result.worker_ids
out["task"] = result.task.module_path
print(json.dumps(out))
"""


def run_django_script(script: str, *args: str, stdin: str = "") -> Any:
    """Run ``script`` in the project's venv (Django 6), without a settings module; return the
    JSON it prints."""
    python = REPO / ".venv" / "bin" / "python"
    if not python.exists():
        pytest.skip(".venv does not exist")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent), "TZ": "UTC"}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    result = subprocess.run(
        [str(python), "-c", script, *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize("tz", ["tz", "notz"])
def test_job_to_task_result_mapping(tz: str) -> None:
    job = {**JOB_MAP, "task": "queue_tasks.add"}
    out = run_django_script(MAPPING_SCRIPT, tz, stdin=json.dumps(job))
    assert {k: out[k] for k in ("SCHEDULED", "READY", "RUNNING")} == {
        "SCHEDULED": "READY",
        "READY": "READY",
        "RUNNING": "RUNNING",
    }
    assert [out[k] for k in ("SUCCESSFUL", "FAILED", "CANCELLED")] == [
        "SUCCESSFUL",
        "FAILED",
        "FAILED",
    ]
    assert out["return_value"] == [1] and out["worker_ids"] == ["w:1"]
    assert out["started_at"].startswith("1970-01-01T00:00:02.5")
    assert out["started_at"].endswith("+00:00") == (tz == "tz")
    assert out["error_class"] == "LeaseExpired"
    assert out["task"] == "queue_tasks.add", "a plain function is wrapped in a Task"


def test_job_lines_written_directly_format_their_time_under_the_handler_lock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The formatter caches each second's text; the keeper thread writes job lines too, so the
    # cache is read and updated only under the handler's lock, as for a record.
    handler = joblog._LineHandler()
    handler.setStream(io.StringIO())
    owned: list[bool] = []
    timestamp = handler.line_formatter.timestamp

    def checked(created: float, msecs: int) -> str:
        owned.append(handler.lock._is_owned())  # type: ignore[union-attr]
        return timestamp(created, msecs)

    monkeypatch.setattr(handler.line_formatter, "timestamp", checked)
    assert handler.write_line(logging.INFO, "job=x")
    assert owned == [True]


SPIN_OPTION_SCRIPT = r"""
import json
import django
from django.conf import settings
settings.configure(INSTALLED_APPS=["gateway_client.django"])
django.setup()
from django.core.exceptions import ImproperlyConfigured
from gateway_client.django.tasks import GatewayTaskBackend
out = {}
for name, options in {
    "default": {},
    "off": {"spin_us": 0},
    "negative": {"spin_us": -5},
    "float": {"spin_us": 1.5},
}.items():
    try:
        backend = GatewayTaskBackend("default", {"OPTIONS": {"socket": "/x.sock", **options}})
        out[name] = backend.queue.client.spin_us
    except ImproperlyConfigured as e:
        out[name] = "error: " + str(e)
print(json.dumps(out))
"""


def test_tasks_backend_spin_option() -> None:
    out = run_django_script(SPIN_OPTION_SCRIPT)
    assert out["default"] == 150 and out["off"] == 0
    for bad in ("negative", "float"):
        assert out[bad].startswith("error: ") and "spin_us" in out[bad], out[bad]
