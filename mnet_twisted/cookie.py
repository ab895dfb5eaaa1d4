"""
Stateless cookies: how a listener answers INIT without keeping any state.

The COOKIE's MAC binds the expiration, both tags, the version, the
connector's IP address and port and the listener's port under a secret key,
so a COOKIE-ECHO proves the connector owns its address and saw our COOKIE.
The listener's own tag is derived from the same secret, so a repeated
handshake from the same connector tag gets the same listener tag, and
several processes sharing the secret agree on both.

A new secret (``rotate``) takes over minting at once; the previous one is
still accepted for the grace given, one cookie lifetime, so the cookies it
minted just before stay good until they expire, and no longer even if they
claim a later expiration.
"""

from __future__ import annotations

import hmac
import os
import socket
import struct
from collections.abc import Callable
from enum import Enum

from .secretfile import SECRET_SIZE, load_or_create
from .wire import MAC_SIZE, CookieEcho

__all__ = ["CookieMinter", "CookieVerdict"]

Address = tuple[str, int]

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
        self._mac_key, self._tag_key = self._keys(secret)
        self._previous_mac_key: bytes | None = None
        self._previous_until = 0.0

    @staticmethod
    def _keys(secret: bytes) -> tuple[bytes, bytes]:
        if len(secret) < MIN_SECRET_SIZE:
            raise ValueError(f"a cookie secret needs at least {MIN_SECRET_SIZE} bytes")
        # Separate keys for separate jobs, so a tag never reveals MAC material.
        return (
            hmac.digest(secret, b"mnet v1 cookie mac", "sha256"),
            hmac.digest(secret, b"mnet v1 listener tag", "sha256"),
        )

    @classmethod
    def random(cls, random_bytes: Callable[[int], bytes] = os.urandom) -> CookieMinter:
        """A minter with a fresh secret known to this process only."""
        return cls(random_bytes(SECRET_SIZE))

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> CookieMinter:
        """A minter whose secret is shared through ``path`` (``mnet_twisted.secretfile``).

        The first process to get there creates the file (mode 0600) with a
        random secret, atomically, so processes started together agree.
        """
        return cls(load_or_create(path))

    def rotate(self, secret: bytes, *, now: float, grace: float) -> None:
        """Mint under ``secret`` from now on; accept the current one until ``now + grace``.

        Raises ``ValueError`` (and keeps the current secret) if ``secret`` is too short.
        """
        mac_key, tag_key = self._keys(secret)
        self._previous_mac_key, self._previous_until = self._mac_key, now + grace
        self._mac_key, self._tag_key = mac_key, tag_key

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
        message = _bound_fields(
            listener_tag, connector_tag, version, expiration, connector, local_port
        )
        return hmac.digest(self._mac_key, message, "sha1")[:MAC_SIZE]

    def check(
        self, echo: CookieEcho, *, connector: Address, local_port: int, now: float
    ) -> CookieVerdict:
        """Whether ``echo`` carries a cookie we minted for ``connector``, and still valid."""
        message = _bound_fields(
            echo.listener_tag,
            echo.connector_tag,
            echo.version,
            echo.expiration,
            connector,
            local_port,
        )
        keys = [self._mac_key]
        if self._previous_mac_key is not None and now <= self._previous_until:
            keys.append(self._previous_mac_key)
        if not any(
            hmac.compare_digest(hmac.digest(key, message, "sha1")[:MAC_SIZE], echo.mac)
            for key in keys
        ):
            return CookieVerdict.FORGED
        if now > echo.expiration:
            return CookieVerdict.EXPIRED
        return CookieVerdict.VALID


def _bound_fields(
    listener_tag: bytes,
    connector_tag: bytes,
    version: int,
    expiration: int,
    connector: Address,
    local_port: int,
) -> bytes:
    """What a COOKIE's MAC covers, in a fixed layout."""
    return b"".join(
        (
            struct.pack("<I", expiration & 0xFFFFFFFF),
            _address_bytes(connector),
            struct.pack("<H", local_port & 0xFFFF),
            listener_tag,
            connector_tag,
            bytes((version & 0xFF,)),
        )
    )
