"""Optuna storage URLs: checked before anything starts, and never written with a password.

A password in ``search.storage`` (``postgresql://user:secret@host/db``) never reaches a file.
:func:`redact_url` drops it from what is written (``study.toml``), :func:`mask_secrets` masks it in free text
(the command line in ``provenance.json``, log lines) and :func:`connect_url` hands it to libpq through
``PGPASSWORD`` at run time, so the URL the storage object keeps (and Ray pickles into the study directory) has
none. On resume the password comes from ``PGPASSWORD`` or ``~/.pgpass``.

(:mod:`study.config.preflight` re-exports these names; :mod:`study.config.study_config` reads them from here, so that neither
module imports the other.)
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from trainables.config import ConfigError

__all__ = ["STORAGE_SCHEMES", "PASSWORD_ENV", "check_storage_url", "redact_url", "mask_secrets", "connect_url"]

# Optuna's RDBStorage takes SQLAlchemy URLs; these are the databases it supports (a "+driver" suffix is allowed).
STORAGE_SCHEMES = ("sqlite", "postgresql", "mysql")
PASSWORD_ENV = "PGPASSWORD"  # libpq (psycopg) reads it, as it reads ~/.pgpass


def _storage_allowed() -> str:
    return ("a journal file path ending in .journal, sqlite:///PATH, postgresql://USER@HOST[:PORT]/DB or "
            "mysql://USER@HOST/DB (password from PGPASSWORD or ~/.pgpass, never in the file)")


def check_storage_url(url: str | None, *, source: str, key: str = "search.storage", files: bool = True) -> None:
    """A storage URL Optuna can open: known scheme, a host and a database for a server, (``files``) an existing
    directory for an SQLite file. Unknown schemes and malformed URLs are refused here instead of after the
    baseline has trained."""
    if url is None:
        return
    if not isinstance(url, str) or not url.strip():
        raise ConfigError(source, key, url, _storage_allowed())
    shown = redact_url(url)
    if "://" not in url:
        if not url.endswith(".journal"):
            raise ConfigError(source, key, shown, _storage_allowed())
        return  # its directory is created when the study starts
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError for a non-numeric port
    except ValueError as err:
        raise ConfigError(source, key, shown, f"{_storage_allowed()} (malformed URL: {err})") from None
    scheme = parts.scheme.split("+", 1)[0]
    if scheme not in STORAGE_SCHEMES:
        raise ConfigError(source, key, shown, f"{_storage_allowed()} (unknown scheme {parts.scheme!r})")
    if scheme == "sqlite":
        path = url.split("://", 1)[1]
        if not path.startswith("/") or path in ("/", "/:memory:"):
            raise ConfigError(source, key, shown, "sqlite:///RELATIVE/PATH.db or sqlite:////ABSOLUTE/PATH.db (a file; "
                                                  "an in-memory database would lose the study)")
        parent = Path(path[1:]).expanduser().resolve().parent
        if files and not parent.is_dir():
            raise ConfigError(source, key, shown, f"a database file in an existing directory ({parent} does not exist)")
        return
    has_host = bool(parts.hostname) or "host=" in parts.query  # ?host=/run/postgresql: a unix socket
    if not has_host or not parts.path.strip("/"):
        raise ConfigError(source, key, shown, f"{_storage_allowed()} (the URL needs a host and a database name)")
    if port is not None and not 0 < port < 65536:
        raise ConfigError(source, key, shown, f"{_storage_allowed()} (port {port} out of range)")
    if parts.password and scheme != "postgresql":
        raise ConfigError(source, key, shown, f"a {scheme} URL without a password (it would be written into the study "
                                              "files); use the server's option file for credentials")


def redact_url(url: str) -> str:
    """``postgresql://user:secret@host/db`` → ``postgresql://user@host/db``; other text unchanged."""
    if not isinstance(url, str) or "://" not in url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return mask_secrets(url)
    if not parts.password and ":" not in parts.netloc.rpartition("@")[0]:
        return url
    user, _, host = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{user.split(':', 1)[0]}@{host}"))


_SECRET = re.compile(r"(\b[a-zA-Z][\w+.-]*://[^:/@\s]*):[^@\s/]*@")


def mask_secrets(text: str) -> str:
    """Every ``scheme://user:password@`` in free text (a command line, a log line) with the password as ***."""
    return _SECRET.sub(r"\1:***@", text) if isinstance(text, str) else text


def connect_url(url: str | None) -> str | None:
    """The storage URL to open at run time: a password in the URL is moved to ``PGPASSWORD`` (this process and
    the Ray workers it starts read it from the environment, never from a file) and the URL returned without it."""
    if url is None or "://" not in url:
        return url
    parts = urlsplit(url)
    if parts.password:
        os.environ[PASSWORD_ENV] = parts.password
    return redact_url(url)
