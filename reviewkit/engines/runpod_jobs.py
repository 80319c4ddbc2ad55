"""RunPod Serverless native jobs: ``/runsync``, then ``/status/{id}`` and ``/cancel/{id}``.

An OpenAI request travels as a job (``{"input": {"openai_route": ..., "openai_input": ...}}``,
whose output is a list holding the OpenAI answer), and every job is billed. So one batch
is paid for once: a submission is retried only when RunPod certainly made no job (no
connection, 408, 429, 5xx); ``/runsync?wait=`` makes RunPod answer with the job's id well
before the client's timeout; once a job has an id it is never submitted again but polled
until it ends; one deadline (``job_deadline``) bounds the whole call, and a job still
queued or running then, or when the call is interrupted or the engine closed, is
cancelled. A job that ends FAILED or TIMED_OUT (a worker lost, or a handler that raises
on this batch) is submitted again at most ``job_resubmits`` times (default 1): a lost
worker passes, and a batch that always fails costs twice, not once per retry. States are
those of RunPod's API (IN_QUEUE, IN_PROGRESS, then COMPLETED, FAILED, CANCELLED, TIMED_OUT).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from reviewkit.engines.remote_http import (
    HttpClient,
    RemoteConnectionError,
    RemoteDeliveryUnknown,
    RemoteError,
    RemoteRequestError,
    server_message,
)

log = logging.getLogger("reviewkit")

#: RunPod job states after which the job will not change any more.
FINAL_JOB_STATES = ("COMPLETED", "FAILED", "TIMED_OUT", "CANCELLED")
#: Seconds a cancellation may take (its retries included).
CANCEL_TIMEOUT = 10.0
#: The longest ``/runsync?wait=`` RunPod accepts, in seconds (5 minutes).
RUNSYNC_MAX_WAIT = 300.0


class RemoteJobError(RemoteError):
    """A RunPod job ended without an answer, or was cancelled at the deadline; names the job."""

    def __init__(self, message: str, job_id: str, state: str | None) -> None:
        super().__init__(message)
        self.job_id = job_id
        self.state = state


class _RunFailed(Exception):
    """Internal: the job ended without a usable answer; another run may give one."""


class _GiveUp(Exception):
    """Internal: stop following this job (the deadline, an interruption, an unreadable status)."""


class RunPodJobs:
    """Sends OpenAI requests as jobs to one endpoint's ``/runsync`` (see the module docstring)."""

    def __init__(self, client: HttpClient, runsync_url: str) -> None:
        self.client = client
        self.policy = client.policy
        self.runsync_url = runsync_url
        self.endpoint = runsync_url.rsplit("/", 1)[0]
        self._closing = threading.Event()
        self._following: set[str] = set()  # ids of jobs being polled (cancelled on close)
        self._changed = threading.Condition()

    def call(self, route: str, body: dict[str, Any], *, stop: threading.Event | None = None) -> Any:
        """The OpenAI answer to ``body`` on ``route``, run as a job; ``stop`` abandons (and cancels) it."""
        deadline = time.monotonic() + self.policy.job_deadline
        job = {"input": {"openai_route": route, "openai_input": body}}
        runs = self.policy.job_resubmits + 1
        for run in range(1, runs + 1):
            state = self._submit(job, route, deadline)
            job_id = str(state["id"])
            state = self._follow(job_id, state, route, deadline, stop)
            status = state.get("status")
            if status == "CANCELLED":
                raise RemoteJobError(
                    f"RunPod job {job_id} for {route} was cancelled on the endpoint (not by "
                    "reviewkit); it is not submitted again",
                    job_id,
                    status,
                )
            try:
                if status == "COMPLETED":
                    return self._output(state, route)
                raise _RunFailed(f"{status}: {state.get('error') or 'RunPod gave no error'}")
            except _RunFailed as failed:
                reason = self.client.redact(str(failed))
            if run == runs or time.monotonic() >= deadline:
                raise RemoteJobError(
                    f"RunPod job {job_id} for {route} ended {reason} (run {run}; a failed job is submitted again "
                    f"at most job_resubmits={self.policy.job_resubmits} time(s), each run is billed)",
                    job_id,
                    status,
                )
            log.warning(
                "remote: RunPod job %s for %s ended %s; submitting the batch again (run %d of at most %d: "
                "job_resubmits=%d)",
                job_id,
                route,
                reason,
                run + 1,
                runs,
                self.policy.job_resubmits,
            )
            delay = min(self.policy.backoff(run - 1, None), max(0.0, deadline - time.monotonic()))
            self.client.count_wait(delay, retry=True)
            time.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self, wait: float = CANCEL_TIMEOUT) -> None:
        """Stop following jobs: each is cancelled; waits up to ``wait`` seconds for that."""
        self._closing.set()
        ends = time.monotonic() + wait
        with self._changed:
            while self._following and time.monotonic() < ends:
                self._changed.wait(max(0.0, ends - time.monotonic()))

    def _submit(self, job: dict[str, Any], route: str, deadline: float) -> dict[str, Any]:
        left = deadline - time.monotonic()
        if left <= 0:
            raise RemoteConnectionError(
                f"no time left to submit the job for {route} (job_deadline={self.policy.job_deadline:g} s)"
            )
        # RunPod answers /runsync when the job ends or after ?wait= ms, with the job's id either way: ask
        # for an answer well before the client's own timeout, so the id always arrives.
        wait = max(0.5, min(RUNSYNC_MAX_WAIT, self.policy.timeout / 2, left / 2))
        url = f"{self.runsync_url}?wait={int(wait * 1000)}"
        try:
            state = self.client.request("POST", url, job, deadline=deadline, replay_safe=False)
        except RemoteDeliveryUnknown as lost:
            raise RemoteDeliveryUnknown(
                f"{lost} (RunPod may have made a job for {route} and bill it: see the "
                "endpoint's requests in the RunPod console)"
            ) from None
        except RemoteConnectionError as refused:
            raise RemoteConnectionError(
                f"{refused} (no job was made for {route}; the call's deadline is "
                f"job_deadline={self.policy.job_deadline:g} s)"
            ) from None
        if not isinstance(state, dict) or not state.get("id"):
            raise RemoteRequestError(
                self.client.redact(
                    f"{self.runsync_url} answered without a job id ({str(state)[:200]}): is it a RunPod endpoint?"
                ),
                502,
            )
        return state

    def _follow(
        self, job_id: str, state: dict[str, Any], route: str, deadline: float, stop: threading.Event | None
    ) -> dict[str, Any]:
        """Poll ``/status`` of this job until it ends; cancel it when giving up (or interrupted)."""
        with self._changed:
            self._following.add(job_id)
        try:
            while state.get("status") not in FINAL_JOB_STATES:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise _GiveUp(
                        f"was still {state.get('status')} after {self.policy.job_deadline:g} s (job_deadline)"
                    )
                interval = min(self.policy.poll_interval, left)
                if self._closing.wait(interval) or (stop is not None and stop.is_set()):
                    raise _GiveUp(f"was abandoned while {state.get('status')} (the call stopped)")
                self.client.count_wait(interval)
                try:
                    state = self.client.request("GET", f"{self.endpoint}/status/{job_id}", deadline=deadline)
                except RemoteError as exc:
                    if time.monotonic() >= deadline:
                        continue  # the loop gives up on the deadline
                    raise _GiveUp(f"has a status that could not be read ({exc})") from None
            return state
        except BaseException as exc:
            outcome = self._cancel(job_id)
            if isinstance(exc, _GiveUp):
                raise RemoteJobError(
                    f"RunPod job {job_id} for {route} {exc}; {outcome}", job_id, state.get("status")
                ) from None
            raise
        finally:
            with self._changed:
                self._following.discard(job_id)
                self._changed.notify_all()

    def _cancel(self, job_id: str) -> str:
        """Cancel the job once; says how it went (a failure names the job for the RunPod console)."""
        try:
            answer = self.client.request(
                "POST", f"{self.endpoint}/cancel/{job_id}", max_retries=2, deadline=time.monotonic() + CANCEL_TIMEOUT
            )
        except RemoteError as exc:
            log.warning("remote: could not cancel RunPod job %s (%s): cancel it in the RunPod console", job_id, exc)
            return f"cancelling it failed ({exc}): cancel it in the RunPod console so it is not billed"
        status = answer.get("status") if isinstance(answer, dict) else None
        return (
            "cancelled it, so it runs (and bills) no further"
            if status in (None, "CANCELLED")
            else f"asked RunPod to cancel it (it reports {status})"
        )

    def _output(self, state: dict[str, Any], route: str) -> Any:
        output = state.get("output")
        if isinstance(output, list):  # the worker yields its answer; RunPod aggregates a list
            if len(output) != 1:
                raise _RunFailed(f"COMPLETED with {len(output)} outputs, expected 1")
            output = output[0]
        if isinstance(output, dict) and ("error" in output or output.get("object") == "error"):
            error = output.get("error")
            code = error.get("code") if isinstance(error, dict) else output.get("code")
            status = int(code) if isinstance(code, int) or (isinstance(code, str) and code.isdigit()) else 400
            message = self.client.redact(server_message(output, str(output)))
            if status in (408, 429) or status >= 500:
                raise _RunFailed(f"COMPLETED with HTTP {status} from the worker's server: {message}")
            raise RemoteRequestError(f"RunPod job {state.get('id')} for {route} was refused: {message}", status)
        return output
