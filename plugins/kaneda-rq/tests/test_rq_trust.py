"""``kaneda worker rq://...`` runs Kaneda's two jobs only, and never unpickles an object.

Anyone who can write to the queue's Redis can enqueue a job naming any function
(``os.system``), or a job whose pickled data calls one as it is loaded. RQ's own worker
runs both; the kaneda worker moves them aside (RQ's failed job registry), counted as
poison, without running them, and delivers the jobs around them.
"""

from __future__ import annotations

import json
import os
import pickle
import socket
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from brokers import RedisServer
from kaneda_rq.backend import JOB
from kaneda_rq.legacy import LEGACY_JOB
from processes import Processes, wait_until
from redis import Redis
from rq import Queue
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry

from kaneda_core import Metric, Metrics, RetryPolicy
from kaneda_core.backends import MemoryBackend
from kaneda_core.message import encode_batch
from kaneda_core.model import host_name, now_ns
from kaneda_core.worker import MessageHandler, install_handler


class Evil:
    """Unpickled, runs ``touch path``: what a hostile writer puts in a job's data."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.path}",))


#: Paths the failure callback below touched (it must never be called).
CALLED_BACK: list[str] = []


def record_callback(job: Job, *args: Any) -> None:
    CALLED_BACK.append(job.id)


@pytest.fixture
def queue(redis_server: RedisServer) -> Iterator[Queue]:
    connection = Redis.from_url(redis_server.url)
    yield Queue(f"trust-{os.urandom(4).hex()}", connection=connection)
    connection.close()


def good(queue: Queue, tag: str, count: int = 3) -> Job:
    ns = now_ns()
    batch = [
        Metric(f"good.{tag}", "gauge", float(n), {"n": str(n)}, None, host_name(), None, ns + n)
        for n in range(count)
    ]
    return queue.enqueue(JOB, encode_batch(batch))


def raw_job(queue: Queue, job_id: str, data: bytes) -> None:
    """A job Redis holds as a hostile writer put it: ``data`` as it is."""
    queue.connection.hset(
        f"rq:job:{job_id}",
        mapping={
            "data": data,
            "status": "queued",
            "origin": queue.name,
            "created_at": "2026-01-01T00:00:00.000000Z",
            "enqueued_at": "2026-01-01T00:00:00.000000Z",
            "description": job_id,
        },
    )
    queue.connection.rpush(queue.key, job_id)


def final_stats(log: str) -> dict[str, int]:
    last = [line for line in log.strip().splitlines() if line.startswith("{")][-1]
    return json.loads(last)  # type: ignore[no-any-return]


def test_kaneda_worker_runs_no_foreign_function_and_unpickles_no_object(
    processes: Processes, redis_server: RedisServer, queue: Queue, tmp_path: Path
) -> None:
    by_pickle, by_func, by_meta = (tmp_path / name for name in ("pickle", "func", "meta"))
    stored = 0
    poison = []

    def goods(tag: str) -> Job:
        nonlocal stored
        stored += 3
        return good(queue, tag)

    goods("first")
    poison.append(queue.enqueue(JOB, Evil(by_pickle)).id)  # runs as RQ unpickles it
    goods("after-pickle")
    poison.append(queue.enqueue("os.system", f"touch {by_func}").id)
    poison.append(queue.enqueue("os.system", f"touch {by_func}").id)
    goods("after-func")
    poison.append(queue.enqueue("myapp.tasks.foo", 1).id)
    poison.append(queue.enqueue(JOB).id)  # Kaneda's jobs with the wrong arguments
    poison.append(queue.enqueue(JOB, "a", "b").id)
    poison.append(queue.enqueue(LEGACY_JOB, "n", "gauge").id)
    goods("after-arity")
    raw_job(queue, "garbage", b"\x80\x04garbage")
    poison.append("garbage")
    # A good job whose meta, unpickled when RQ fetches the job, runs a command.
    meta = goods("evil-meta")
    queue.connection.hset(meta.key, "meta", pickle.dumps(Evil(by_meta)))
    queue.enqueue(LEGACY_JOB, "legacy.ok", "gauge", 1, {"a": "b"}, None)  # kaneda 1.0's job
    stored += 1
    last = goods("last")

    worker = processes.worker(
        f"rq://127.0.0.1:{redis_server.port}/0?queue_name={queue.name}", "memory://"
    )

    def done() -> bool:
        return last.get_status(refresh=True) in (JobStatus.FINISHED, JobStatus.FAILED)

    wait_until(done, 60, worker.log, alive=worker)
    assert worker.stop() == 0
    log = worker.log()
    assert not by_pickle.exists() and not by_func.exists() and not by_meta.exists(), log
    stats = final_stats(log)
    assert stats["stored"] == stored, log
    assert stats["poison"] == len(poison), log
    assert sorted(FailedJobRegistry(queue=queue).get_job_ids()) == sorted(poison)
    assert queue.count == 0
    # Each refused job logged once, with the function; a note once per kind of refusal.
    assert log.count("message moved aside") == len(poison), log
    assert log.count("'os.system'") == 3, log  # two jobs, and one note
    assert "exception raised while executing" not in log, log  # no RQ traceback as well


def zlib_bomb(size: int) -> bytes:
    """``size`` zero bytes, compressed: about a thousandth of that in Redis."""
    packer = zlib.compressobj(9)
    chunk = bytes(1 << 20)
    return b"".join(packer.compress(chunk) for _ in range(size >> 20)) + packer.flush()


def test_job_data_that_decompresses_to_gigabytes_is_refused_within_a_bound(
    processes: Processes, redis_server: RedisServer, queue: Queue
) -> None:
    """RQ decompresses a job's data, and its error text, whole: 512 KB written to Redis
    took the worker to 512 MB more before the data was found unreadable."""
    bomb = zlib_bomb(512 << 20)
    assert len(bomb) < 1 << 20
    good(queue, "first")
    raw_job(queue, "bomb", bomb)
    with_error = good(queue, "error-text")  # delivered: its error text is not run
    queue.connection.hset(with_error.key, "exc_info", bomb)
    last = good(queue, "last")
    worker = processes.worker(
        f"rq://127.0.0.1:{redis_server.port}/0?queue_name={queue.name}", "memory://"
    )

    def done() -> bool:
        return last.get_status(refresh=True) in (JobStatus.FINISHED, JobStatus.FAILED)

    wait_until(done, 60, worker.log, alive=worker)
    status = Path(f"/proc/{worker.pid}/status").read_text()
    peak_kb = int(next(line for line in status.splitlines() if line.startswith("VmHWM")).split()[1])
    assert worker.stop() == 0
    log = worker.log()
    assert peak_kb < 256 * 1024, log  # the worker is about 60 MB; the bomb 512 MB
    stats = final_stats(log)
    assert (stats["stored"], stats["poison"]) == (9, 1), log
    assert FailedJobRegistry(queue=queue).get_job_ids() == ["bomb"]
    assert "grows past 67,108,864 bytes as it is decompressed" in log, log


def test_a_job_names_no_callback_or_webhook_the_worker_calls(queue: Queue, tmp_path: Path) -> None:
    from kaneda_rq.worker import JobKeepingWorker

    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.5)
    port = listener.getsockname()[1]
    handler = MessageHandler(Metrics(MemoryBackend(), retry=RetryPolicy(attempts=1)))
    install_handler(handler)
    try:
        poison = queue.enqueue(JOB, "not a batch")
        # Fields RQ keeps in the job's hash as text: names it imports and calls, URLs it posts to.
        hook = json.dumps([{"url": f"http://127.0.0.1:{port}/", "job_status": "failed"}])
        queue.connection.hset(
            poison.key,
            mapping={"failure_callback_name": f"{__name__}.record_callback", "webhooks": hook},
        )
        good(queue, "ok")
        JobKeepingWorker([queue], connection=queue.connection).work(burst=True)
        assert CALLED_BACK == []
        with pytest.raises(TimeoutError):
            listener.accept()
        assert FailedJobRegistry(queue=queue).get_job_ids() == [poison.id]
        assert handler.stats.poison == 1 and handler.stats.stored == 3
    finally:
        listener.close()
        handler.close()
        install_handler(None)


def test_job_data_loads_plain_values_only() -> None:
    from kaneda_rq.trust import JobSerializer

    genuine = (LEGACY_JOB, None, ("n", "custom", {"a": [1, 2.5, True, None]}, ["t"], "id"), {})
    assert JobSerializer.loads(pickle.dumps(genuine, protocol=pickle.HIGHEST_PROTOCOL)) == genuine
    assert JobSerializer.loads(JobSerializer.dumps(genuine)) == genuine
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        with pytest.raises(pickle.UnpicklingError, match=r"(posix|os|nt)\.system"):
            JobSerializer.loads(pickle.dumps((JOB, None, (Evil(Path("x")),), {}), protocol))


def test_rqs_own_worker_given_kanedas_job_class_and_serializer_refuses_the_same(
    queue: Queue, tmp_path: Path
) -> None:
    from kaneda_rq.trust import JobSerializer, KanedaJob
    from rq import SimpleWorker

    # rq worker -j kaneda_rq.trust.KanedaJob -S kaneda_rq.trust.JobSerializer ...
    handler = MessageHandler(Metrics(MemoryBackend(), retry=RetryPolicy(attempts=1)))
    install_handler(handler)
    try:
        refused = [
            queue.enqueue(JOB, Evil(tmp_path / "pickle")).id,
            queue.enqueue("os.system", f"touch {tmp_path / 'func'}").id,
        ]
        good(queue, "ok")
        worker = SimpleWorker(
            [queue], connection=queue.connection, job_class=KanedaJob, serializer=JobSerializer
        )
        worker.subscribe = lambda: None  # type: ignore[method-assign]  # RQ's listener: 60 s to stop
        worker.work(burst=True)
        assert list(tmp_path.iterdir()) == []
        assert sorted(FailedJobRegistry(queue=queue).get_job_ids()) == sorted(refused)
        assert handler.stats.poison == 2 and handler.stats.stored == 3
    finally:
        handler.close()
        install_handler(None)


def test_numpys_numbers_are_loaded_as_the_plain_numbers_they_hold() -> None:
    """kaneda 1.0 (and the face) enqueue a numpy.float64 value as given: its job is
    delivered, the number read from its bytes, with nothing called."""
    np = pytest.importorskip("numpy")
    from kaneda_rq.trust import JobSerializer

    values = [
        np.float64(1.5),
        np.float32(-2.5),
        np.float16(0.5),
        np.int64(-3),
        np.int32(7),
        np.int8(-8),
        np.uint64(2**64 - 1),
        np.uint8(200),
        np.bool_(True),
        np.float64("nan"),
    ]
    for protocol in range(3, pickle.HIGHEST_PROTOCOL + 1):  # (RQ's: the highest)
        job = (LEGACY_JOB, None, ("n", "gauge", values, {"k": np.int64(3)}, None), {})
        loaded = JobSerializer.loads(pickle.dumps(job, protocol))
        numbers = loaded[2][2]
        assert [type(n) for n in numbers] == [float] * 3 + [int] * 5 + [bool, float]
        assert numbers[:-1] == [
            float(v) if "float" in type(v).__name__ else v.item() for v in values[:-1]
        ]
        assert numbers[-1] != numbers[-1]  # nan
        assert loaded[2][3] == {"k": 3}
    with pytest.raises(pickle.UnpicklingError, match="not a number"):
        JobSerializer.loads(pickle.dumps(np.datetime64("2026-01-01"), pickle.HIGHEST_PROTOCOL))
    with pytest.raises(pickle.UnpicklingError, match="plain values only"):
        JobSerializer.loads(pickle.dumps(np.array([1.0]), pickle.HIGHEST_PROTOCOL))
