"""
Stateless cookies: how a listener answers INIT without keeping any state.

The COOKIE's MAC binds the expiration, both tags, the version, the
connector's IP address and port and the listener's port under a secret key,
so a COOKIE-ECHO proves the connector owns its address and saw our COOKIE.
The listener's own tag is derived from the same secret, so a repeated
handshake from the same connector tag gets the same listener tag, and
several processes sharing the secret agree on both.
"""

from __future__ import annotations

import contextlib
import hmac
import os
import socket
import struct
from collections.abc import Callable
from enum import Enum
from pathlib import Path

from .wire import MAC_SIZE, CookieEcho

__all__ = ["CookieMinter", "CookieVerdict"]

Address = tuple[str, int]

SECRET_SIZE = 32
MIN_SECRET_SIZE = 16


class CookieVerdict(Enum):
    VALID = "valid"
    EXPIRED = "expired"
    FORGED = "forged"


def _address_bytes(address: Address) -> bytes:
    host, port = address[0], address[1]
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            packed = socket.inet_pton(family, host)
        except (OSError, ValueError):
            continue
        return packed + struct.pack("<H", port & 0xFFFF)
    # Not an IP literal (only simulated networks do this): still bind it.
    encoded = host.encode("utf-8", "surrogatepass")
    return struct.pack("<H", len(encoded)) + encoded + struct.pack("<H", port & 0xFFFF)


class CookieMinter:
    """Mints and checks COOKIE MACs and listener tags under one secret."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < MIN_SECRET_SIZE:
            raise ValueError(f"a cookie secret needs at least {MIN_SECRET_SIZE} bytes")
        # Separate keys for separate jobs, so a tag never reveals MAC material.
        self._mac_key = hmac.digest(secret, b"mnet v1 cookie mac", "sha256")
        self._tag_key = hmac.digest(secret, b"mnet v1 listener tag", "sha256")

    @classmethod
    def random(cls, random_bytes: Callable[[int], bytes] = os.urandom) -> CookieMinter:
        """A minter with a fresh secret known to this process only."""
        return cls(random_bytes(SECRET_SIZE))

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> CookieMinter:
        """A minter whose secret is shared through ``path``.

        The first process to get there creates the file (mode 0600) with a
        random secret, atomically, so processes started together agree.
        """
        target = Path(path)
        if not target.exists():
            temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(os.urandom(SECRET_SIZE))
                # If another process won the race, we use its secret instead.
                with contextlib.suppress(FileExistsError):
                    os.link(temporary, target)
            finally:
                temporary.unlink(missing_ok=True)
        return cls(target.read_bytes())

    def listener_tag(self, connector: Address, connector_tag: bytes) -> bytes:
        """The tag this listener uses with ``connector``'s session ``connector_tag``."""
        return hmac.digest(self._tag_key, _address_bytes(connector) + connector_tag, "sha256")[:3]

    def mint(
        self,
        *,
        listener_tag: bytes,
        connector_tag: bytes,
        version: int,
        expiration: int,
        connector: Address,
        local_port: int,
    ) -> bytes:
        """The MAC for a COOKIE with these fields."""
        message = b"".join(
            (
                struct.pack("<I", expiration & 0xFFFFFFFF),
                _address_bytes(connector),
                struct.pack("<H", local_port & 0xFFFF),
                listener_tag,
                connector_tag,
                bytes((version & 0xFF,)),
            )
        )
        return hmac.digest(self._mac_key, message, "sha1")[:MAC_SIZE]

    def check(
        self, echo: CookieEcho, *, connector: Address, local_port: int, now: float
    ) -> CookieVerdict:
        """Whether ``echo`` carries a cookie we minted for ``connector``, and still valid."""
        expected = self.mint(
            listener_tag=echo.listener_tag,
            connector_tag=echo.connector_tag,
            version=echo.version,
            expiration=echo.expiration,
            connector=connector,
            local_port=local_port,
        )
        if not hmac.compare_digest(expected, echo.mac):
            return CookieVerdict.FORGED
        if now > echo.expiration:
            return CookieVerdict.EXPIRED
        return CookieVerdict.VALID
