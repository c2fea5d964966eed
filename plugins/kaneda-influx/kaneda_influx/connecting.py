"""Opening a connection within what is left of a request's bound: see
:mod:`kaneda_core.connecting`, where this lives now (kaneda-elasticsearch and kaneda-rethink
use it too)."""

from __future__ import annotations

from kaneda_core.connecting import (
    AddressInfo,
    ConnectFailed,
    NameNotResolved,
    RequestTimeout,
    Resolver,
    connect_to_any,
    is_ip_address,
    show_address,
)

__all__ = [
    "AddressInfo",
    "ConnectFailed",
    "NameNotResolved",
    "RequestTimeout",
    "Resolver",
    "connect_to_any",
    "is_ip_address",
    "show_address",
]
