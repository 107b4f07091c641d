"""Start-up failures of ``wattmux run`` as one line: what failed, where, what to do.

``startup_problem`` turns what the daemon raised while starting (often an
exception group from its TaskGroup) into that line, or None for a failure it
does not know (which keeps its traceback).  ``store_path_problem`` is the
check ``check-config`` and ``run`` make before starting: the store's file
must be creatable and writable.
"""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path

from scheduler.api.app import ListenError
from scheduler.store.sqlite import StoreError


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def startup_problem(exc: BaseException, config_path: str, listen: str) -> str | None:
    """One line for a known start-up failure in exc (or an exception group holding it)."""
    for leaf in _leaves(exc):
        if isinstance(leaf, ListenError):
            hint = (
                "stop the process that holds the port, or choose a free one"
                if leaf.errno == errno.EADDRINUSE
                else "choose an address of this machine and a free port"
            )
            return (
                f"{leaf.strerror} ([api] listen = {listen!r} in {config_path}): {hint} "
                "(edit [api] listen or set WATTMUX_API__LISTEN=HOST:PORT)"
            )
        if isinstance(leaf, StoreError):
            return (
                f"store {leaf.path}: {leaf.message} ([store] path in {config_path}): "
                "set [store] path to a file in a writable directory "
                "(or WATTMUX_STORE__PATH=FILE)"
            )
    return None


def store_path_problem(path: Path) -> str | None:
    """Why the store file cannot be created or written, or None when it can (no file made)."""
    if str(path) == ":memory:":
        return None
    if path.exists():
        if path.is_dir():
            return f"store.path: {path} is a directory; name a file, e.g. {path / 'wattmux.sqlite'}"
        if not os.access(path, os.R_OK | os.W_OK):
            return f"store.path: {path} is not readable and writable by this user"
        return None
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        return (
            f"store.path: cannot create directory {path.parent}: {parent} exists and is not a "
            "directory; choose another path"
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"store.path: cannot create {path}: {parent} is not writable by this user"
    return None


def listen_problem(host: str, port: int) -> tuple[str | None, str | None]:
    """Try the API's address now: (error, warning), either None.

    An address not of this machine is an error; one in use is a warning (the daemon itself
    may be the one holding it).
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as exc:
        return f"api.listen: cannot resolve {host!r}: {exc.strerror or exc}", None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return None, (
                    f"api.listen: {host}:{port} is in use now (by a running wattmux, or "
                    "another process: `wattmux run` would stop there)"
                )
            return (
                f"api.listen: cannot listen on {host}:{port}: {exc.strerror or exc}; "
                "choose an address of this machine",
                None,
            )
    return None, None
