"""Completions a worker sends without waiting for their answers (its prefetched jobs).

A worker that holds more jobs of the same dequeue answer reports each success with
``queue.complete`` on its :class:`~gateway_client.worker.dequeue.DequeueChannel` and goes
straight on to the next job: the report has been sent before the next job starts, which is all
the protocol asks ("Prefetch" in ``gateway/PROTOCOL.md``), and the gateway commits it in the same
transaction as other writes that arrive meanwhile. :class:`CompletionPipeline` remembers what
each request was for and handles its answer when the worker reads it (between jobs, while it
waits for a dequeue, and before it blocks or exits):

- the stored job: the worker finishes the attempt (its log line, ``task_finished``; the job is
  decoded only for the latter);
- anything else (a lost lease, another refusal) and a connection that broke before the answer:
  the attempt is reported again on its own, synchronously, which tells a completion stored
  before the break from a lost lease and fails the job if its result cannot be stored.

A completion whose request would be over 1 KiB (the smallest ``max_frame_size`` a gateway takes)
is not pipelined but reported on its own through the client, which knows the gateway's real
limit: one larger than the gateway takes is then refused before it is sent, instead of costing
the channel its connection (and the answers of every completion in flight).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway_client.errors import ConnectionError, FrameTooLarge, GatewayError
from gateway_client.queue import Job
from gateway_client.worker.dequeue import Answer, DequeueChannel
from gateway_client.worker.joblog import logger
from gateway_client.worker.runner import TaskCall

__all__ = ["Attempt", "CompletionPipeline"]

#: The largest request the pipeline sends: the smallest ``[server] max_frame_size`` allowed.
MAX_PIPELINED_PAYLOAD = 1024


@dataclass(slots=True)
class Attempt:
    """One run of a job in this process, from the task's end until its outcome is stored.

    :ivar call: the task's call (None if the task could not even be resolved).
    :ivar duration: seconds the task ran.
    """

    job: Job
    call: TaskCall | None
    duration: float


class CompletionPipeline:
    """The completions in flight on one channel and what to do with their answers.

    Used by the thread that owns the channel only (the main thread; the lease keeper only once
    the main thread is inside a task, to settle before it ends the process).

    :param channel: the connection the completions are sent on.
    :param stored: called with an attempt and the answer once its completion was stored (the
        answer's body, decoded on demand, is the stored job).
    :param report: reports an attempt and its return value again, synchronously, and finishes
        it (called for every completion that was not answered with the stored job).
    """

    def __init__(
        self,
        channel: DequeueChannel,
        *,
        stored: Callable[[Attempt, Answer], None],
        report: Callable[[Attempt, Any], None],
    ) -> None:
        self.channel = channel
        self._stored = stored
        self._report = report
        self._in_flight: dict[int, tuple[Attempt, Any]] = {}  # request id -> (attempt, value)

    def __len__(self) -> int:
        """How many completions wait for their answer."""
        return len(self._in_flight)

    def send(self, attempt: Attempt, value: Any) -> None:
        """Send the attempt's completion without waiting (or report it on its own, see above)."""
        job = attempt.job
        args: dict[str, Any] = {"id": job.id, "lease_token": job.lease_token or ""}
        if value is not None:
            args["return_value"] = value
        try:
            request_id = self.channel.send(
                "queue.complete", args, max_payload=MAX_PIPELINED_PAYLOAD
            )
        except FrameTooLarge:
            self._report(attempt, value)
            return
        except ConnectionError as e:
            logger.warning("could not send the completion of job %s: %s", job.id, e)
            self._report(attempt, value)
            self._report_lost()
            return
        self._in_flight[request_id] = (attempt, value)

    def collect(self) -> None:
        """Handle the answers that have come, without waiting for more."""
        if self._in_flight:
            self._handle(0.0)

    def settle(self, timeout: float = 30.0) -> None:
        """Wait for the answer of every completion in flight and handle them.

        :param timeout: seconds to wait; the completions still unanswered then are reported
            again on their own.
        """
        if self._in_flight:
            self._handle(timeout)

    def _handle(self, timeout: float) -> None:
        try:
            answers = self.channel.answers(timeout)
        except GatewayError as e:
            # A broken connection or timeout, a reply out of protocol, or an error the server
            # sends with id 0 before it closes (too_many_connections): the channel is closed and
            # the completions unanswered are lost, to be reported again below.
            logger.warning(
                "lost the answers of %d completions (%s); reporting them again one by one",
                len(self._in_flight),
                e,
            )
            answers = self.channel.answers(0.0)  # those read before the connection broke
        for answer in answers:
            entry = self._in_flight.pop(answer.request_id, None)
            if entry is None:
                continue
            attempt, value = entry
            if answer.error is None:
                self._stored(attempt, answer)
            else:
                self._report(attempt, value)
        self._report_lost()

    def _report_lost(self) -> None:
        for request_id in self.channel.take_lost():
            entry = self._in_flight.pop(request_id, None)
            if entry is not None:
                self._report(*entry)
