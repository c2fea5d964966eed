"""The ``kaneda.backends`` classes: each backend's class, writing kaneda 1.0's layout.

``kaneda.backends.InfluxBackend`` is a subclass of ``kaneda_influx.InfluxBackend`` whose
``layout`` defaults to ``"kaneda1"``, so code written for kaneda 1.0 (and a settings
module naming ``kaneda.backends.InfluxBackend``) stores exactly what 1.0 stored. Passing
``layout="kaneda2"`` gives this version's layout. Everything else is the plugin's own.
"""

from __future__ import annotations

import inspect
from typing import Any

from kaneda_core.backend import Backend
from kaneda_core.layouts import KANEDA1

#: How long the face's InfluxBackend and RethinkBackend wait, at most, to create their
#: database (and RethinkDB's to connect) when constructed, as kaneda 1.0's did. A live
#: server answers in milliseconds; a dead or unreachable one costs construction this much
#: once, and the first delivery tries again.
CREATE_DATABASE_TIMEOUT = 1.0


def kaneda1_class(cls: type[Backend], class_name: str) -> type[Backend]:
    """A subclass of ``cls``, named ``class_name``, whose ``layout`` defaults to kaneda1."""
    signature = inspect.signature(cls)
    parameters = [
        parameter.replace(default=KANEDA1) if name == "layout" else parameter
        for name, parameter in signature.parameters.items()
    ]
    if "layout" not in signature.parameters:
        raise TypeError(f"{cls.__module__}.{cls.__name__} has no layout parameter")
    after_init = _AFTER_INIT.get(class_name)

    def __init__(self: Backend, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("layout", KANEDA1)
        cls.__init__(self, *args, **kwargs)
        if after_init is not None:
            after_init(self)

    face = type(
        class_name,
        (cls,),
        {
            "__init__": __init__,
            "__module__": "kaneda.backends",
            "__qualname__": class_name,
            "__doc__": f"{cls.__doc__ or ''}\n\n    kaneda 1.0's class: ``layout`` defaults "
            f'to ``"kaneda1"``, what kaneda 1.0 wrote.\n',
            "__signature__": signature.replace(parameters=parameters),
        },
    )
    return face


def _create_influx_database(backend: Any) -> None:
    """Create the database now, best effort and briefly, as kaneda 1.0's constructor did.

    kaneda 1.0 code may query the database right after constructing the backend; the
    plugin itself only creates it on the first delivery, so that construction never
    touches the network.
    """
    timeout = backend.client._timeout
    if timeout is None or timeout > CREATE_DATABASE_TIMEOUT:
        timeout = CREATE_DATABASE_TIMEOUT
    backend.create_database(timeout=timeout)


def _connect_rethink(backend: Any) -> None:
    """Connect and create the database now, best effort and briefly, as kaneda 1.0's
    constructor did: its ``backend.connection`` was open once constructed.

    The plugin itself connects on the first delivery (and again after a connection is
    lost), so that construction never touches the network; so does the first delivery
    here when this attempt fails.
    """
    if backend.connection is not None:  # the application's own connection
        return
    timeout = backend.timeout
    if timeout is None or timeout > CREATE_DATABASE_TIMEOUT:
        timeout = CREATE_DATABASE_TIMEOUT
    backend.connect_now(timeout=timeout)


#: What kaneda 1.0's constructor of a class did that the plugin leaves to the first delivery.
_AFTER_INIT = {"InfluxBackend": _create_influx_database, "RethinkBackend": _connect_rethink}
