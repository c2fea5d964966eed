"""Keeping Kaneda correct across ``os.fork()``.

A forked child (gunicorn ``--preload``, uWSGI, ``multiprocessing``) inherits a copy of
every object and one thread only: the one that forked. Whatever the parent's other
threads held at that instant (a lock, half a request on a socket) is frozen in the
child's copy. So in the child, before anything else runs:

1. module-level locks are made anew (:func:`reinit_after_fork`);
2. every live backend drops the connections, clients and files it inherited
   (:meth:`~kaneda_core.Backend.after_fork`), once per backend;
3. every delivery starts its counters at zero with new locks;
4. every dispatcher empties its queue (the parent delivers its own); its worker is
   started by the child's first reporting call, not here: a child may patch
   ``threading`` after the fork (gunicorn's gevent workers), and a thread started before
   the patch is a real one in a process of greenlets.

Some state cannot be made anew in the child: SQLite keeps process-wide bookkeeping of
its open files and a global mutex, and a parent thread caught inside SQLite at the fork
leaves them locked in the child for ever. So, as ``logging`` does for its handlers,
objects registered with :func:`hold_across_fork` take their lock *before* the fork (no
Kaneda thread is then inside SQLite) and release it after, in the parent. Before
those, the fork waits for the threads inside a backend or a hook to leave (a client
library importing a module, say: :mod:`kaneda_core.fork_gate`); after them, it holds the
log handlers' locks (:mod:`kaneda_core.fork_logging`).

Inherited objects the child must not use are *abandoned*, not closed: closing can talk
on the parent's connection (a driver's goodbye) or, for SQLite, checkpoint and delete
the parent's write-ahead log. :func:`abandon` keeps them referenced for the life of the
child so that no finalizer ever runs.

A ``multiprocessing`` child leaves through ``os._exit()``, which skips ``atexit``; the
callbacks given to :func:`at_exit` also run from multiprocessing's own exit handling.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import sys
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, Protocol

from .fork_gate import gate
from .fork_logging import hold_handlers, release_handlers, renew_handlers

log = logging.getLogger("kaneda")


class _Resettable(Protocol):
    def _after_fork_in_child(self) -> None: ...


_module_resets: list[Callable[[], None]] = []
_backends: weakref.WeakSet[Any] = weakref.WeakSet()
_deliveries: weakref.WeakSet[Any] = weakref.WeakSet()
_others: weakref.WeakSet[Any] = weakref.WeakSet()
_dispatchers: weakref.WeakSet[Any] = weakref.WeakSet()
_exit_callbacks: list[Callable[[], None]] = []
_held: weakref.WeakSet[Any] = weakref.WeakSet()
_held_now: list[Any] = []
#: The log handlers whose locks the fork holds (see fork_logging).
_handlers_held: list[logging.Handler] = []
#: Seconds a fork waits, at most and in all, for threads to leave a backend, a held
#: section or a log write (see _before_fork).
HOLD_TIMEOUT = 2.0
_abandoned: list[object] = []
_installed = False
#: Process-pool packages whose children leave through os._exit() after running their
#: finalizers: multiprocessing, and billiard (its fork, Celery's prefork pool).
_POOL_PACKAGES = ("multiprocessing", "billiard")
#: The pool packages whose after-fork registry has Kaneda's exit hook.
_pools_hooked: set[str] = set()
_celery_hooked = False
#: Set once the exit callbacks started (a SIGTERM then lets them finish).
_exiting = False
#: Per pool package, the process whose finalizer runs the exit callbacks.
_finalizer_pids: dict[str, int] = {}
#: The process the fork steps last ran in (uWSGI may run them twice: see _hook_uwsgi).
_reset_pid = os.getpid()


def reinit_after_fork(reset: Callable[[], None]) -> Callable[[], None]:
    """Run ``reset`` first thing in every forked child (to make a module's locks anew)."""
    _install()
    _module_resets.append(reset)
    return reset


def track_backend(backend: object) -> None:
    """Call ``backend.after_fork()`` in every forked child while the backend lives."""
    _install()
    try:
        _backends.add(backend)
    except TypeError:  # a class with __slots__ and no __weakref__: cannot be tracked
        log.debug("Kaneda: %s cannot be weakly referenced; no fork step for it", backend)


def track_delivery(delivery: _Resettable) -> None:
    """Reset ``delivery`` (counters, locks) in every forked child."""
    _install()
    _deliveries.add(delivery)


def track_dispatcher(dispatcher: _Resettable) -> None:
    """Reset ``dispatcher`` (queue, worker) in every forked child."""
    _install()
    _dispatchers.add(dispatcher)


def hold_across_fork(guarded: Any) -> None:
    """Have ``guarded.hold_for_fork(timeout) -> bool`` called before each fork, in the
    forking thread, and ``guarded.release_after_fork()`` after it, in the parent."""
    _install()
    _held.add(guarded)


def track_resettable(obj: _Resettable) -> None:
    """Call ``obj._after_fork_in_child()`` (new locks, say) in every forked child."""
    _install()
    _others.add(obj)


def untrack_dispatcher(dispatcher: _Resettable) -> None:
    """Stop resetting ``dispatcher`` (it was closed)."""
    _dispatchers.discard(dispatcher)


def at_exit(callback: Callable[[], None]) -> None:
    """Run ``callback`` at interpreter exit and at a ``multiprocessing`` child's exit."""
    import atexit

    _install()
    if not _exit_callbacks:
        atexit.register(_run_exit_callbacks)
        _hook_uwsgi_exit()
    _exit_callbacks.append(callback)
    if _pools_imported():
        _hook_pool_exits()
        _hook_this_child()
    _hook_celery_pool_exits()
    # A process ended by SIGTERM (docker stop, systemd, Kubernetes) runs no exit
    # callbacks: deliver first, unless the application handles SIGTERM itself.
    _deliver_on_terminate()


def abandon(*objects: object) -> None:
    """Keep ``objects`` alive, unused, for the life of this process: no finalizer runs."""
    _abandoned.extend(obj for obj in objects if obj is not None)


def _install() -> None:
    global _installed
    if not _installed and hasattr(os, "register_at_fork"):
        os.register_at_fork(
            before=_before_fork,
            after_in_parent=_release_held,
            after_in_child=_after_fork_in_child,
        )
        _installed = True
        _hook_uwsgi()


def _hook_uwsgi() -> None:
    """Under uWSGI, run the fork steps in each worker uWSGI forks.

    uWSGI loads the application in its master and forks the workers in C, without
    Python's fork callbacks (unless ``--py-call-osafterfork``): a worker would keep its
    parent's connections and have no delivery thread, and deliver nothing until it
    exits. uWSGI calls ``uwsgi.post_fork_hook`` in each worker: Kaneda's runs the fork
    steps there, then the hook that was set before it.
    """
    uwsgi = sys.modules.get("uwsgi")
    if uwsgi is None:
        return
    decorators = sys.modules.get("uwsgidecorators")
    chain = getattr(decorators, "postfork_chain", None)
    if isinstance(chain, list):  # the application's uwsgidecorators runs the hooks
        chain.append(_after_fork_in_child)
        return
    previous = getattr(uwsgi, "post_fork_hook", None)

    def post_fork() -> None:
        _after_fork_in_child()
        if callable(previous):
            previous()

    uwsgi.post_fork_hook = post_fork  # type: ignore[attr-defined]


def _before_fork() -> None:
    # One deadline for all the waiting: a fork is delayed HOLD_TIMEOUT at most.
    deadline = time.monotonic() + HOLD_TIMEOUT

    def left() -> float:
        return max(0.0, deadline - time.monotonic())

    # First the threads inside a backend or a hook, which may need the sections below.
    gate.hold_for_fork(left())
    for guarded in list(_held):
        try:
            if guarded.hold_for_fork(left()):
                _held_now.append(guarded)
        except Exception as error:  # noqa: BLE001 - the fork must go on
            log.debug("Kaneda: could not hold %s across a fork: %s", guarded, error)
    # Last, and with nothing logged after: a thread in a held section may be logging.
    _handlers_held.extend(hold_handlers(left()))


def _release_held() -> None:
    release_handlers(_handlers_held)
    while _held_now:
        _held_now.pop().release_after_fork()
    gate.release_after_fork()


def _after_fork_in_child() -> None:
    global _reset_pid
    if os.getpid() == _reset_pid:  # ran for this process already (uWSGI's two hooks)
        return
    _reset_pid = os.getpid()
    renew_handlers(_handlers_held)  # first: the steps below may log
    gate.after_fork_in_child()
    _held_now.clear()  # the child makes those locks anew
    for reset in _module_resets:
        try:
            reset()
        except Exception as error:  # noqa: BLE001 - the steps below must run all the same
            log.error("Kaneda: resetting %s after a fork failed: %s", reset.__module__, error)
    for backend in list(_backends):
        try:
            backend.after_fork()
        except Exception as error:  # noqa: BLE001 - a broken plugin must not break the child
            log.error("Kaneda: %s.after_fork() failed: %s", type(backend).__name__, error)
    for obj in [*_others, *_deliveries, *_dispatchers]:
        try:
            obj._after_fork_in_child()
        except Exception as error:  # noqa: BLE001 - one failure must not skip the others
            log.error("Kaneda: resetting %s after a fork failed: %s", type(obj).__name__, error)
    if _exit_callbacks and _pools_imported():
        _hook_pool_exits()
    if _exit_callbacks:
        _hook_celery_pool_exits()


class _ExitHook:
    """A referent for a pool's after-fork registry (it holds weak references)."""


_exit_hook = _ExitHook()


def _pools_imported() -> bool:
    return any(f"{package}.util" in sys.modules for package in _POOL_PACKAGES)


def _hook_celery_pool_exits() -> None:
    """Celery's prefork pool processes leave through ``os._exit()`` without running
    their finalizers (a child recycled by ``--max-tasks-per-child``, or at shutdown);
    Celery sends ``worker_process_shutdown`` in the child just before: deliver then."""
    global _celery_hooked
    signals = sys.modules.get("celery.signals")
    if signals is None or _celery_hooked:
        return
    signals.worker_process_shutdown.connect(
        _on_celery_process_shutdown, weak=False, dispatch_uid="kaneda-exit"
    )
    _celery_hooked = True


def _on_celery_process_shutdown(*_args: Any, **_kwargs: Any) -> None:
    if not _exiting:
        _run_exit_callbacks()


def _hook_pool_exits() -> None:
    # multiprocessing (and billiard) run after-fork callbacks in the child right after
    # they clear the parent's finalizers; the finalizer registered there runs when the
    # child's target returns, before os._exit(). The registration is inherited: made
    # once per package.
    for package in _POOL_PACKAGES:
        util = sys.modules.get(f"{package}.util")
        if util is None or package in _pools_hooked:
            continue
        util.register_after_fork(_exit_hook, functools.partial(_register_finalizer, package))
        _pools_hooked.add(package)


def _register_finalizer(package: str, _hook: object = None) -> None:
    if _finalizer_pids.get(package) == os.getpid():
        return
    util = sys.modules[f"{package}.util"]
    util.Finalize(None, _run_exit_callbacks, exitpriority=100)
    _finalizer_pids[package] = os.getpid()
    _deliver_on_terminate()


def _hook_this_child() -> None:
    """The first Metrics of a ``multiprocessing`` child: make sure its exit delivers.

    A child forked from a parent that had one got its finalizer from the after-fork
    callback. One made in the child itself (a Pool initializer, a lazy global) came
    after those callbacks ran: its finalizer is registered here. A spawned child
    (``inheriting`` while it imports the parent's main module) runs no after-fork
    callbacks and leaves through ``sys.exit()``, which runs ``atexit``: it needs the
    SIGTERM handler only.
    """
    if "multiprocessing.util" in sys.modules:
        from multiprocessing import process

        if process.parent_process() is not None:  # started, its after-fork callbacks ran
            _register_finalizer("multiprocessing")
        elif getattr(process.current_process(), "_inheriting", False):
            _deliver_on_terminate()
    billiard = sys.modules.get("billiard.process")
    if billiard is not None and "billiard.util" in sys.modules:
        current = billiard.current_process()
        if getattr(current, "_parent_pid", None) is not None:  # a pool worker, say
            _register_finalizer("billiard")


def _deliver_on_terminate() -> None:
    """Deliver what is queued when SIGTERM or SIGHUP ends the process, then end as it would have.

    SIGTERM's default action ends a process without running its exit callbacks: what
    a service had queued was lost at each ``docker stop``, ``systemctl stop`` or pod
    eviction, and ``Pool.terminate()`` (which leaving a ``with Pool()`` block calls)
    ended workers with the metrics of their last tasks queued; SIGHUP's did the same
    to a process whose terminal or SSH session closed. With this handler the process
    runs the exit callbacks (each bounded by its ``exit_timeout``) and dies of the same
    signal, with the same status. Installed only from the main thread and only where
    the signal has its default action: a handler of the application's own (a server's)
    is kept, an ignored signal (``nohup``) stays ignored, and a handler set later
    replaces this one. A uvicorn server holding the signal is seen to apart
    (:func:`_deliver_after_uvicorn_shutdown`).
    """
    import threading

    # Looked at from any thread: no handler is set for it.
    _deliver_after_uvicorn_shutdown()
    # eventlet's main greenlet is no main_thread(): signal.signal says whether this is
    # the main OS thread (ValueError, below).
    if threading.current_thread() is not threading.main_thread() and not threads_are_green():
        _warn_off_the_main_thread()
        return
    try:
        installed = False
        for number in _ending_signals():
            if signal.getsignal(number) is signal.SIG_DFL:
                signal.signal(number, _terminated)
                installed = True
        if installed and _wakeup is None:
            _watch_for_a_missed_sigterm()
    except (ValueError, OSError) as error:  # not the main thread after all: keep the default
        log.debug("Kaneda: no SIGTERM handler in this multiprocessing child: %s", error)


#: The uvicorn servers whose shutdown runs the exit callbacks.
_uvicorn_servers: weakref.WeakSet[Any] = weakref.WeakSet()


def deliver_after_server_shutdown() -> None:
    """Where a server now holds SIGTERM and will end the process by raising it again
    once it has shut down (uvicorn), run the exit callbacks after that shutdown: called
    when a Metrics is made, and at its first reporting call."""
    _deliver_after_uvicorn_shutdown()


def _deliver_after_uvicorn_shutdown() -> None:
    """Where a uvicorn server holds SIGTERM, run the exit callbacks once it has shut down.

    uvicorn (0.29 and later) sets its own handler for SIGINT and SIGTERM while it serves
    and, once it has shut down, puts back the handlers it found and raises the signal
    that stopped it again. A worker of ``uvicorn --workers N`` (or ``--reload``) imports
    the application, and makes its ``Metrics``, while uvicorn holds the signals: Kaneda
    then sets no handler, the one uvicorn puts back is the default action, and the
    raised SIGTERM ended the worker with no exit callback run. So the server's shutdown
    (its lifespan shutdown included) is followed by the exit callbacks, when the signal
    it is about to raise again is SIGTERM (or SIGHUP): every ``Metrics`` of the process
    delivers, as Kaneda's own handler would have had it. A process that has Kaneda's
    handler from before the server started gets it back, and it still ends the process
    by that signal (the callbacks it runs then find nothing left to do).
    """
    for number in _ending_signals():
        server = _uvicorn_server_holding(signal.getsignal(number))
        if server is not None and server not in _uvicorn_servers:
            _uvicorn_servers.add(server)
            _follow_shutdown(server)


def _follow_shutdown(server: Any) -> None:
    """Have ``server.shutdown()`` (a coroutine method) followed by the exit callbacks."""
    shutdown = server.shutdown

    async def shutdown_then_deliver(*args: Any, **kwargs: Any) -> Any:
        try:
            return await shutdown(*args, **kwargs)
        finally:
            _after_uvicorn_shutdown(server)

    server.shutdown = shutdown_then_deliver


def _uvicorn_server_holding(handler: object) -> Any:
    """The ``uvicorn.server.Server`` whose ``handle_exit`` ``handler`` is, or None."""
    module = sys.modules.get("uvicorn.server")
    server = getattr(handler, "__self__", None)
    if module is None or server is None or getattr(handler, "__name__", "") != "handle_exit":
        return None
    return server if isinstance(server, getattr(module, "Server", ())) else None


def _after_uvicorn_shutdown(server: Any) -> None:
    global _exiting
    # What uvicorn raises again next (a list of signal numbers; not there in another
    # version: its server shut down, the exit callbacks run).
    captured = getattr(server, "_captured_signals", None)
    if isinstance(captured, list) and not set(captured) & set(_ending_signals()):
        return  # SIGINT (a KeyboardInterrupt), --limit-max-requests: the process exits
    if _exiting:
        return
    try:
        _run_exit_callbacks()
    finally:
        # The signal raised next may find Kaneda's own handler, put back: it must still
        # end the process by that signal, as it would have without this.
        _exiting = False


def deliver_on_terminate() -> None:
    """Have SIGTERM and SIGHUP deliver what every ``Metrics`` queued before they end the process.

    Each ``Metrics`` made in the main thread sees to it (Python lets only the main thread
    set a signal handler). Call this from the main thread at start-up where the first
    ``Metrics`` is made in another thread (a lazy global a request thread builds):
    otherwise a ``docker stop`` loses what is queued. A handler of the application's own
    is kept, as an ignored signal is.
    """
    _deliver_on_terminate()


#: Whether a Metrics made outside the main thread, SIGTERM unhandled, was said.
_warned_off_main = False


def _warn_off_the_main_thread() -> None:

    global _warned_off_main
    if _warned_off_main or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return  # said, or handled: by Kaneda (from the main thread) or by the application
    _warned_off_main = True
    log.warning(
        "Kaneda: a Metrics was made outside the main thread, where Python sets no signal "
        "handler: if SIGTERM (docker stop) ends this process, what is queued is lost. Call "
        "kaneda_core.deliver_on_terminate() from the main thread at start-up, or make the "
        "first Metrics there."
    )


def _ending_signals() -> list[int]:
    """SIGTERM and SIGHUP: sent from outside, their default action ends the process
    without its exit callbacks (a stop, a closed terminal or SSH session). A signal the
    application ignores (``nohup``) or handles is left to it."""

    return [getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)]


#: Set when the SIGTERM handler starts (the watcher then stops waking the main thread).
_terminating = False
#: The pipe the signal module writes the number of each signal to, while Kaneda watches.
_wakeup: tuple[int, int] | None = None


def _watch_for_a_missed_sigterm() -> None:
    """Wake the main thread until it runs the SIGTERM (or SIGHUP) handler.

    Python runs a handler in the main thread at its next step; a main thread that
    entered a blocking wait just as the signal arrived (a ``Pool`` worker taking the
    lock of its task queue) takes no step, and a process that the default action would
    have ended lives on, ``Pool.terminate()`` waiting for it for ever. A thread of
    Kaneda's reads the signal numbers the signal module writes to a pipe and, after a
    SIGTERM, sends the main thread the signal again until the handler starts. Left out
    when the application has a wakeup file of its own (an asyncio loop).
    """
    import threading

    global _wakeup
    if _gevent_patched():
        # Its read would hold up every greenlet of the process (gevent leaves os.read
        # as it is), and gevent's loop hears signals itself. eventlet's read waits as a
        # greenlet does, and the write to the wakeup file wakes eventlet's loop, which
        # would otherwise wait out its timers before running what the handler started.
        return
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    previous = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    if previous != -1:
        signal.set_wakeup_fd(previous)
        os.close(read_end)
        os.close(write_end)
        return
    main = threading.main_thread().ident
    try:
        start_thread(_wake_main_thread, "kaneda-sigterm", read_end, main)
    except ThreadStartError as error:
        # Without it, only a SIGTERM that lands on the main thread is acted on at once:
        # said, and tried again by the next Metrics.
        signal.set_wakeup_fd(-1)
        os.close(read_end)
        os.close(write_end)
        log.warning("Kaneda: %s; a SIGTERM may wait until the main thread runs again", error)
        return
    _wakeup = (read_end, write_end)


def _wake_main_thread(read_end: int, main: int | None) -> None:

    while True:
        try:
            numbers = os.read(read_end, 64)
        except OSError:
            return
        if not numbers:
            return
        ending = [number for number in _ending_signals() if number in numbers]
        if not ending:
            continue
        number = ending[0]
        while not _terminating and main is not None:
            time.sleep(0.2)
            # A handler the application set after Kaneda's (a server's) gets the
            # signal once, as it would have without Kaneda: never again from here.
            if _terminating or signal.getsignal(number) is not _terminated:
                break
            signal.pthread_kill(main, number)


@reinit_after_fork
def _no_wakeup_in_child() -> None:
    # The watcher is its parent's thread: the child watches for itself, if it has the
    # handler (a multiprocessing child installs it again anyway).
    global _wakeup, _terminating

    _terminating = False
    if _wakeup is None:
        return
    for end in _wakeup:
        os.close(end)
    _wakeup = None
    try:
        signal.set_wakeup_fd(-1)
        if any(signal.getsignal(number) is _terminated for number in _ending_signals()):
            _watch_for_a_missed_sigterm()
    except (ValueError, OSError) as error:
        log.debug("Kaneda: no SIGTERM watcher in this child: %s", error)


def _terminated(signum: int, _frame: object) -> None:

    global _terminating
    _terminating = True
    signal.signal(signum, signal.SIG_DFL)
    if _exiting:
        # The child is exiting already (its target returned), inside the very callbacks
        # this would run: let them finish, within their own bounds.
        return
    if threads_are_green():
        # gevent runs the handler in its event loop's greenlet when every other waits,
        # and nothing may wait there: a greenlet of its own delivers and ends the process.
        _spawn_green(_terminate, signum)
        return
    _terminate(signum)


def _terminate(signum: int) -> None:
    """Run the exit callbacks, then end the process by ``signum`` (its default action)."""
    try:
        _run_exit_callbacks()
    finally:
        os.kill(os.getpid(), signum)


def _spawn_green(function: Callable[..., object], *args: Any) -> None:
    """Run ``function(*args)`` in a new greenlet (gevent's or eventlet's), without waiting."""
    if _gevent_patched():
        sys.modules["gevent"].spawn(function, *args)
    else:
        sys.modules["eventlet"].spawn(function, *args)


def _hook_uwsgi_exit() -> None:
    """Under uWSGI, run the exit callbacks from ``uwsgi.atexit`` too.

    uWSGI calls ``uwsgi.atexit`` as a worker ends, before it tears the interpreter down
    (which runs Python's exit callbacks); with ``--skip-atexit-teardown`` it tears
    nothing down, so only ``uwsgi.atexit`` runs: every worker's queue was lost at each
    stop, reload and recycle (0 of 2,000 metrics stored). Kaneda's callbacks run after
    a hook set before them (it may report); run again at the teardown, they find every
    Metrics closed.
    """
    uwsgi = sys.modules.get("uwsgi")
    if uwsgi is None:
        return
    previous = getattr(uwsgi, "atexit", None)

    def run_at_exit() -> None:
        try:
            if callable(previous):
                previous()
        finally:
            _run_exit_callbacks()

    uwsgi.atexit = run_at_exit  # type: ignore[attr-defined]


def _run_exit_callbacks() -> None:
    global _exiting
    _exiting = True
    for callback in _exit_callbacks:
        try:
            callback()
        except Exception as error:  # noqa: BLE001 - exit must go on
            log.error("Kaneda: exit handler failed: %s", error)


#: Signals a process receives from outside (kill, Ctrl-C, timers, a supervisor).
_PROCESS_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGALRM", "SIGUSR1", "SIGUSR2")


def start_thread(target: Callable[..., object], name: str, *args: Any) -> threading.Thread:
    """Start ``target(*args)`` in a daemon thread of Kaneda's own, which blocks the
    signals a process receives.

    The kernel hands a signal sent to the process to any thread that does not block it.
    Python runs its handlers in the main thread, but only a thread that *receives* the
    signal is woken from a blocking call: a SIGTERM that lands on a Kaneda thread while
    the main thread waits on a lock (a ``multiprocessing.Pool`` worker waiting for its
    next task) is never acted on, and ``Pool.terminate()`` waits for that worker for
    ever. Kaneda's threads leave such signals to the application's.

    Raises :class:`ThreadStartError` when no thread can be started (the process's or
    the user's thread limit, no memory for its stack).
    """
    refusal = _no_threads_in_this_process()
    if refusal:
        raise ThreadStartError(refusal)
    _warn_if_threads_stall()
    blocked = {getattr(signal, name) for name in _PROCESS_SIGNALS if hasattr(signal, name)}
    # A green thread (gevent, eventlet) runs on the OS thread that starts it: blocking
    # signals there would block them for the application's greenlets, SIGTERM included.
    if threads_are_green():
        blocked = set()

    def run() -> None:
        # No pthread_sigmask on some platforms (Windows): nothing to block there.
        with contextlib.suppress(AttributeError, OSError, ValueError):
            if blocked:
                signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
        target(*args)

    thread = threading.Thread(target=run, name=name, daemon=True)
    try:
        thread.start()
    except RuntimeError as error:  # "can't start new thread"
        raise ThreadStartError(f"cannot start Kaneda's {name} thread: {error}") from None
    return thread


#: uWSGI options under which its master forks with Python's fork steps, or loads the
#: application in each worker instead.
_UWSGI_SAFE_FORKS = ("py-call-uwsgi-fork-hooks", "lazy-apps", "lazy")


def _no_threads_in_this_process() -> str:
    """Why no thread of Kaneda's may run in this process (empty if one may).

    uWSGI's master (and, without ``--master``, the process that loads the application)
    forks its workers in C, without Python's fork steps: a thread of Kaneda's that
    holds the GIL, or any lock, at that instant leaves the worker hung for ever (all 4
    workers of a master that reported 1,000 metrics while it loaded, hung before their
    first request). Unless uWSGI runs them (``--py-call-uwsgi-fork-hooks``) or loads
    the application in each worker (``--lazy-apps``), no thread runs there: its calls
    are delivered in the caller's thread. A worker, a mule or the spooler may have one.
    """
    uwsgi = sys.modules.get("uwsgi")
    if uwsgi is None:
        return ""
    try:
        options = uwsgi.opt
        if any(options.get(name) for name in _UWSGI_SAFE_FORKS):
            return ""
        if uwsgi.worker_id() or getattr(uwsgi, "mule_id", lambda: 0)():
            return ""
        if getattr(uwsgi, "i_am_the_spooler", lambda: False)():
            return ""
    except Exception:  # noqa: BLE001 - not uWSGI's module after all: threads as usual
        return ""
    return (
        "uWSGI forks its workers from this process without Python's fork steps, where a "
        "thread of Kaneda's could leave them hung (run uWSGI with "
        "--py-call-uwsgi-fork-hooks, or --lazy-apps, to batch here)"
    )


_stall_told = False


def _warn_if_threads_stall() -> None:
    """uWSGI before 2.0.31 runs Python threads only with ``--enable-threads``: without
    it, Kaneda's thread runs while a request does, and metrics wait while it is idle."""
    global _stall_told
    uwsgi = sys.modules.get("uwsgi")
    if _stall_told or uwsgi is None:
        return
    if getattr(uwsgi, "has_threads", True):
        return
    _stall_told = True
    log.warning(
        "Kaneda: uWSGI runs without --enable-threads, so Kaneda's delivery thread runs "
        "only while a request does: metrics wait while the server is idle. Run uWSGI "
        "with --enable-threads"
    )


def threads_are_green() -> bool:
    """Whether ``threading`` is monkey-patched (gevent, eventlet): a thread is then a
    greenlet of the OS thread that starts it, and whatever blocks that OS thread (a
    lock or queue of the C library's, a read) holds up every greenlet on it."""
    if _gevent_patched():
        return True
    patcher = sys.modules.get("eventlet.patcher")
    return patcher is not None and bool(patcher.is_monkey_patched("thread"))


def load_what_a_green_exit_needs() -> None:
    """gevent: import now what a send at exit needs, while imports can still register.

    gevent's hub makes its thread pool (for DNS lookups, with its default resolver) the
    first time it is needed, importing ``gevent.threadpool`` and ``concurrent.futures``,
    which registers an atexit callback with ``threading``: refused once the
    interpreter's shutdown began ("can't register atexit after shutdown"). A worker
    whose first send came at exit (a Metrics with a long flush_interval, a short-lived
    gunicorn worker) lost its batch. Called when a worker starts in a patched process:
    an import, once.
    """
    if "gevent.threadpool" in sys.modules or not _gevent_patched():
        return
    import importlib

    try:
        importlib.import_module("gevent.threadpool")
    except Exception as error:  # noqa: BLE001 - the worker starts all the same
        log.debug("Kaneda: could not load gevent.threadpool: %r", error)


def _gevent_patched() -> bool:
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and bool(monkey.is_module_patched("threading"))


class ThreadStartError(RuntimeError):
    """A thread of Kaneda's could not be started (a thread limit reached, no memory)."""
