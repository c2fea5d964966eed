"""The wrappers ``metrics.timed()`` puts around a function, one per kind of function.

Each times what a call of its kind really takes: a function until it returns or
raises; a coroutine until it is done (cancelled, too); a generator, or an async
generator, from its first step until it is exhausted, closed or fails, with whatever the
caller sends or throws into it passed on (a generator wrapped as a plain function was
timed while it was made, before any of its work: 0.0 s).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncGenerator, Callable, Generator
from time import perf_counter
from typing import Any

Report = Callable[[float, str], None]


def timed(func: Callable[..., Any], report: Report, name: str) -> Callable[..., Any]:
    """``func`` wrapped so that each call reports its duration, as ``report(seconds, name)``."""
    if inspect.isasyncgenfunction(func):
        return _async_generator(func, report, name)
    if inspect.isgeneratorfunction(func):
        return _generator(func, report, name)
    if inspect.iscoroutinefunction(func) or (
        not isinstance(func, type) and inspect.iscoroutinefunction(type(func).__call__)
    ):
        return _coroutine(func, report, name)
    return _function(func, report, name)


def _function(func: Callable[..., Any], report: Report, name: str) -> Callable[..., Any]:
    @functools.wraps(func)
    def timed_function(*args: Any, **kwargs: Any) -> Any:
        start = perf_counter()
        try:
            return func(*args, **kwargs)
        finally:
            report(perf_counter() - start, name)

    return timed_function


def _coroutine(func: Callable[..., Any], report: Report, name: str) -> Callable[..., Any]:
    @functools.wraps(func)
    async def timed_coroutine(*args: Any, **kwargs: Any) -> Any:
        start = perf_counter()
        try:
            return await func(*args, **kwargs)
        finally:
            report(perf_counter() - start, name)

    return timed_coroutine


def _generator(func: Callable[..., Any], report: Report, name: str) -> Callable[..., Any]:
    @functools.wraps(func)
    def timed_generator(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
        start = perf_counter()
        try:
            return (yield from func(*args, **kwargs))  # send(), throw(), close() pass on
        finally:
            report(perf_counter() - start, name)

    return timed_generator


def _async_generator(func: Callable[..., Any], report: Report, name: str) -> Callable[..., Any]:
    @functools.wraps(func)
    async def timed_async_generator(*args: Any, **kwargs: Any) -> AsyncGenerator[Any, Any]:
        start = perf_counter()
        inner = func(*args, **kwargs)
        try:
            value = await inner.__anext__()
            while True:  # what yield from would do, had async generators one
                try:
                    sent = yield value
                except GeneratorExit:
                    await inner.aclose()
                    raise
                except BaseException as error:  # noqa: BLE001 - thrown in: passed on
                    value = await inner.athrow(error)
                else:
                    value = await inner.asend(sent)
        except StopAsyncIteration:
            return
        finally:
            report(perf_counter() - start, name)

    return timed_async_generator
