"""
Stateless cookies: how a listener answers INIT without keeping any state.

The COOKIE's MAC binds the expiration, both tags, the version, the
connector's IP address and port and the listener's port under a secret key,
so a COOKIE-ECHO proves the connector owns its address and saw our COOKIE.
The listener's own tag is derived from the same secret, so a repeated
handshake from the same connector tag gets the same listener tag, and
several processes sharing the secret agree on both.

Both are keyed BLAKE2s (RFC 7693's MAC mode) under keys derived from the
secret by HMAC-SHA256.  Nothing on the wire depends on the choice (only the
listener that mints a MAC checks it); BLAKE2s from a pre-keyed state costs a
fifth of a one-shot HMAC, and a listener computes three per handshake.

A new secret (``rotate``) takes over minting at once; the previous one is
still accepted for the grace given, one cookie lifetime, so the cookies it
minted just before stay good until they expire, and no longer even if they
claim a later expiration.
"""

from __future__ import annotations

import hashlib
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


_PORT = struct.Struct("<H")
#: expiration, the listener's port, the version: the fixed part of a MAC's message.
_FIXED_FIELDS = struct.Struct("<IHB")
_inet_pton = socket.inet_pton


def _address_bytes(address: Address) -> bytes:
    host, port = address[0], address[1]
    try:
        packed = _inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
    except (OSError, ValueError):
        # Not an IP literal (only simulated networks do this): still bind it.
        encoded = host.encode("utf-8", "surrogatepass")
        packed = _PORT.pack(len(encoded)) + encoded
    return packed + _PORT.pack(port & 0xFFFF)


def _keyed(key: bytes, size: int) -> hashlib.blake2s:
    return hashlib.blake2s(key=key, digest_size=size, person=b"mnet v1")


class CookieMinter:
    """Mints and checks COOKIE MACs and listener tags under one secret."""

    def __init__(self, secret: bytes) -> None:
        self._mac, self._tag = self._keys(secret)
        self._previous_mac: hashlib.blake2s | None = None
        self._previous_until = 0.0

    @staticmethod
    def _keys(secret: bytes) -> tuple[hashlib.blake2s, hashlib.blake2s]:
        """The keyed states every MAC and tag start from (copied, never updated)."""
        if len(secret) < MIN_SECRET_SIZE:
            raise ValueError(f"a cookie secret needs at least {MIN_SECRET_SIZE} bytes")
        # Separate keys for separate jobs, so a tag never reveals MAC material.
        return (
            _keyed(hmac.digest(secret, b"mnet v1 cookie mac", "sha256"), MAC_SIZE),
            _keyed(hmac.digest(secret, b"mnet v1 listener tag", "sha256"), 3),
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
        mac, tag = self._keys(secret)
        self._previous_mac, self._previous_until = self._mac, now + grace
        self._mac, self._tag = mac, tag

    def listener_tag(self, connector: Address, connector_tag: bytes) -> bytes:
        """The tag this listener uses with ``connector``'s session ``connector_tag``."""
        state = self._tag.copy()
        state.update(_address_bytes(connector) + connector_tag)
        return state.digest()

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
        return _mac(self._mac, message)

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
        if not hmac.compare_digest(_mac(self._mac, message), echo.mac):
            previous = self._previous_mac
            if (
                previous is None
                or now > self._previous_until
                or not hmac.compare_digest(_mac(previous, message), echo.mac)
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
    fixed = _FIXED_FIELDS.pack(expiration & 0xFFFFFFFF, local_port & 0xFFFF, version & 0xFF)
    return fixed + _address_bytes(connector) + listener_tag + connector_tag


def _mac(keyed: hashlib.blake2s, message: bytes) -> bytes:
    state = keyed.copy()
    state.update(message)
    return state.digest()
