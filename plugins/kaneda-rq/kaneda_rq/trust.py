"""What ``kaneda worker rq://...`` loads and runs of a job: Kaneda's jobs, plain values.

RQ's worker runs whatever function a job names, and loads a job's data (and its meta)
with ``pickle``, which calls whatever the data names: anyone who can write to the
queue's Redis could run code in the worker. The kaneda worker loads them with
:class:`JobSerializer` (RQ's pickle format, plain values only) and runs them as
:class:`KanedaJob`: ``kaneda_rq.jobs.deliver(message)`` and kaneda 1.0's
``kaneda.tasks.rq.report(name, metric, value, tags, id_=None)``, nothing else. Any other
job is moved aside (RQ's failed job registry) as poison, counted, without running.
"""

from __future__ import annotations

import inspect
import io
import logging
import pickle
import struct
import threading
import zlib
from collections.abc import Callable
from functools import partial
from typing import Any, ClassVar, NoReturn

from rq.exceptions import DeserializationError
from rq.job import Job, JobStatus

from .jobs import PoisonMessage

log = logging.getLogger("kaneda.rq")

#: How many distinct refusals (kind and function) are explained in the log, at most.
MAX_NOTES = 100
#: The most a job's data (or error text) is let grow to as it is decompressed: this, or
#: INFLATE_RATIO times its size in Redis if more. Kaneda's batches compress by 5 to 20
#: times; a few hundred KB written to Redis can decompress to gigabytes.
MIN_INFLATED_BYTES = 64 * 1024 * 1024
INFLATE_RATIO = 100


def inflated(stored: bytes) -> tuple[bytes | None, int]:
    """``stored`` decompressed as RQ decompresses it (or as it is, if it is not zlib's),
    and the bound it was held to; None if it grows past that bound."""
    bound = max(MIN_INFLATED_BYTES, INFLATE_RATIO * len(stored))
    inflater = zlib.decompressobj()
    try:
        data = inflater.decompress(stored, bound)
    except zlib.error:
        return stored, bound  # RQ's fallback: stored uncompressed
    if inflater.unconsumed_tail:
        return None, bound
    return data, bound


class RefusedJob(PoisonMessage):
    """The job is not one of Kaneda's (or not as Kaneda's producers make them): not run."""


#: numpy's number types by the code of their pickled dtype: their struct format.
NUMPY_NUMBERS = {
    "b1": "?",
    "i1": "b",
    "i2": "h",
    "i4": "i",
    "i8": "q",
    "u1": "B",
    "u2": "H",
    "u4": "I",
    "u8": "Q",
    "f2": "e",
    "f4": "f",
    "f8": "d",
}
_NUMPY_SCALAR = {("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar")}


class _PickledDtype:
    """A ``numpy.dtype`` as pickle gives it: its code and byte order, nothing called."""

    def __init__(self, code: object, *_: object) -> None:
        self.code = code
        self.order = "<"

    def __setstate__(self, state: object) -> None:
        if isinstance(state, tuple) and len(state) > 1 and state[1] in ("<", ">"):
            self.order = state[1]


def _numpy_number(dtype: object, data: object = None) -> bool | int | float:
    """The plain number a pickled numpy scalar holds, read from its bytes."""
    code = dtype.code if isinstance(dtype, _PickledDtype) else None
    if not isinstance(code, str) or code not in NUMPY_NUMBERS or not isinstance(data, bytes):
        raise pickle.UnpicklingError(
            f"the data holds a numpy value of dtype {code!r:.50}, not a number"
        )
    assert isinstance(dtype, _PickledDtype)
    try:
        (number,) = struct.unpack(dtype.order + NUMPY_NUMBERS[code], data)
    except struct.error as error:
        raise pickle.UnpicklingError(f"a numpy {code} of {len(data)} bytes: {error}") from None
    return number  # type: ignore[no-any-return]


class _PlainUnpickler(pickle.Unpickler):
    """Loads str, bytes, numbers, bools, None, tuples, lists, dicts and sets: no class,
    no function. Kaneda's producers (and kaneda 1.0's) put nothing else in a job, but
    numpy's numbers, which an application may report (``numpy.float64(1.5)``): those are
    read from their bytes as the plain number they hold, without numpy."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _NUMPY_SCALAR:
            return _numpy_number
        if (module, name) == ("numpy", "dtype"):
            return _PickledDtype
        raise pickle.UnpicklingError(
            f"the data names {f'{module}.{name}'!r:.200}; a Kaneda job holds plain values only"
        )


class JobSerializer:
    """RQ's serializer (pickle), loading plain values only: never an object."""

    dumps: ClassVar[Callable[[Any], bytes]] = partial(
        pickle.dumps, protocol=pickle.HIGHEST_PROTOCOL
    )

    @staticmethod
    def loads(data: bytes) -> Any:
        return _PlainUnpickler(io.BytesIO(data)).load()


def kaneda_jobs() -> dict[str, Callable[..., Any]]:
    """The jobs the kaneda worker runs, by the name their producers enqueue them as."""
    from .backend import JOB
    from .jobs import deliver
    from .legacy import LEGACY_JOB, report

    return {JOB: deliver, LEGACY_JOB: report}


class KanedaJob(Job):
    """An RQ job as the kaneda worker runs it: one of :func:`kaneda_jobs`, or refused.

    It calls no callback and posts no webhook named in Redis (Kaneda's producers set
    none): RQ would import and call the one, and send a request to the other.
    """

    _unreadable: str | None = None
    _notes: ClassVar[set[tuple[str, str]]] = set()
    _notes_lock: ClassVar[threading.Lock] = threading.Lock()

    def restore(self, raw_data: Any) -> Any:
        """RQ's restore, with the data and error text decompressed within a bound (RQ
        decompresses them whole: a small job in Redis could take the worker's memory)."""
        fields = {key.decode() if isinstance(key, bytes) else key: v for key, v in raw_data.items()}
        data, exc_info = fields.get("data"), fields.pop("exc_info", None)
        if isinstance(data, bytes):
            fields["data"] = b""  # decompressed here, not by RQ
        result = super().restore(fields)
        self._too_large = None
        if isinstance(data, bytes):
            loaded, bound = inflated(data)
            if loaded is None:
                self._too_large = (
                    f"its data, {len(data):,} bytes in Redis, grows past {bound:,} bytes "
                    "as it is decompressed"
                )
                loaded = b""
            self.data = loaded
        if isinstance(exc_info, bytes):
            text, bound = inflated(exc_info)
            shown = f"(an error text larger than {bound:,} bytes)" if text is None else text
            self._exc_info = shown if isinstance(shown, str) else shown.decode("utf-8", "replace")
        return result

    _too_large: str | None = None

    def _deserialize_data(self) -> None:
        if self._too_large is not None:
            # Nothing to run; the data stays as it is in Redis, for ``rq info``.
            self._unreadable = self._too_large
            self._func_name, self._instance, self._args, self._kwargs = None, None, (), {}  # type: ignore[assignment]
            return
        try:
            super()._deserialize_data()  # type: ignore[no-untyped-call]
        except DeserializationError as error:
            self._unreadable = f"its data is not plain values ({error.__cause__ or error!s:.200})"
            self._func_name, self._instance, self._args, self._kwargs = None, None, (), {}  # type: ignore[assignment]
        else:
            self._unreadable = None

    def _execute(self) -> Any:
        function, refusal = self._judge()
        if function is None:
            self._refuse(*refusal)
        return function(*self.args, **self.kwargs)

    def _judge(self) -> tuple[Callable[..., Any] | None, tuple[str, str, str]]:
        """The function to run, or why not: (kind, function name, reason)."""
        name = self.func_name
        where = f"RQ job {self.id!r:.80}"
        if self._unreadable is not None:
            reason = f"{where}: {self._unreadable}: not loaded, not run"
            return None, ("unreadable data", "", reason)
        function = kaneda_jobs().get(name) if isinstance(name, str) else None
        if function is None or self.instance is not None:
            jobs = ", ".join(kaneda_jobs())
            shown = f"{name!r:.200}" if self.instance is None else f"a method {name!r:.200}"
            reason = f"{where} calls {shown}, not one of Kaneda's jobs ({jobs}): not run"
            return None, ("not a Kaneda job", f"{name!r:.200}", reason)
        name = str(name)
        args, kwargs = self.args, self.kwargs
        if not isinstance(args, (list, tuple)) or not isinstance(kwargs, dict):
            return None, (
                "wrong arguments",
                name,
                f"{where}: {name}'s arguments are not a list: not run",
            )
        try:
            inspect.signature(function).bind(*args, **kwargs)
        except TypeError as error:
            keywords = f"{list(kwargs)!r:.200}"
            reason = (
                f"{where} gives {name} {len(args)} arguments, keywords {keywords}: {error}: not run"
            )
            return None, ("wrong arguments", name, reason)
        return function, ("", "", "")

    def _refuse(self, kind: str, name: str, reason: str) -> NoReturn:
        from kaneda_core.worker import current_handler

        with self._notes_lock:
            first = (kind, name) not in self._notes and len(self._notes) < MAX_NOTES
            if first:
                self._notes.add((kind, name))
        if first:
            log.warning(
                "Kaneda RQ worker: refusing jobs (%s%s): only Kaneda's jobs run here, with "
                "plain values; whoever can write to this Redis enqueued it. Such jobs are "
                "moved aside to RQ's failed job registry and counted as poison; this is "
                "logged once per kind",
                kind,
                f" {name}" if name else "",
            )
        self.retries_left = 0  # never run again
        current_handler().reject(reason)
        raise RefusedJob(reason)

    # -- names and URLs in Redis that RQ would import, call or send to ------------------

    @property
    def success_callback(self) -> None:
        return None

    @property
    def failure_callback(self) -> None:
        return None

    @property
    def stopped_callback(self) -> None:
        return None

    def send_webhooks(self, status: str | JobStatus, *, exc_string: str | None = None) -> None:
        return None
