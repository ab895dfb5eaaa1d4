"""Stateless cookies: what the MAC binds, expiry, and secrets shared through a file."""

from __future__ import annotations

import dataclasses
import os
import stat
from pathlib import Path

import pytest

from mnet_twisted import wire
from mnet_twisted.cookie import CookieMinter, CookieVerdict

SECRET = b"fixed secret for cookie tests!!"
CONNECTOR = ("192.0.2.7", 40000)
LOCAL_PORT = 5000
NOW = 1_700_000_000


def _echo(minter: CookieMinter, *, expiration: int = NOW + 5) -> wire.CookieEcho:
    connector_tag = b"\xaa\xbb\xcc"
    listener_tag = minter.listener_tag(CONNECTOR, connector_tag)
    mac = minter.mint(
        listener_tag=listener_tag,
        connector_tag=connector_tag,
        version=1,
        expiration=expiration,
        connector=CONNECTOR,
        local_port=LOCAL_PORT,
    )
    return wire.CookieEcho(listener_tag, connector_tag, 1, expiration, mac)


def _check(
    minter: CookieMinter,
    echo: wire.CookieEcho,
    *,
    connector: tuple[str, int] = CONNECTOR,
    local_port: int = LOCAL_PORT,
    now: float = NOW,
) -> CookieVerdict:
    return minter.check(echo, connector=connector, local_port=local_port, now=now)


def test_minted_cookie_verifies() -> None:
    """A cookie minted by a minter is accepted by it before it expires."""
    minter = CookieMinter(SECRET)
    assert _check(minter, _echo(minter)) is CookieVerdict.VALID


def test_mac_is_twenty_bytes_and_deterministic() -> None:
    """The MAC is a 20-byte value that depends only on the secret and the bound fields."""
    a, b = CookieMinter(SECRET), CookieMinter(SECRET)
    assert _echo(a).mac == _echo(b).mac
    assert len(_echo(a).mac) == 20


@pytest.mark.parametrize(
    "change",
    [
        {"expiration": NOW + 6},
        {"listener_tag": b"\x00\x00\x01"},
        {"connector_tag": b"\xaa\xbb\xcd"},
        {"version": 2},
    ],
    ids=lambda c: next(iter(c)),
)
def test_changing_a_bound_field_in_the_packet_fails(change: dict[str, object]) -> None:
    """Editing any MAC-bound field carried in the echo makes it a forgery."""
    minter = CookieMinter(SECRET)
    echo = dataclasses.replace(_echo(minter), **change)  # type: ignore[arg-type]
    assert _check(minter, echo) is CookieVerdict.FORGED


def test_changing_the_mac_fails() -> None:
    """Flipping one bit of the MAC makes the echo a forgery."""
    minter = CookieMinter(SECRET)
    echo = _echo(minter)
    bad = bytes([echo.mac[0] ^ 1]) + echo.mac[1:]
    assert _check(minter, dataclasses.replace(echo, mac=bad)) is CookieVerdict.FORGED


@pytest.mark.parametrize(
    "kwargs",
    [
        {"connector": ("192.0.2.8", 40000)},
        {"connector": ("192.0.2.7", 40001)},
        {"local_port": LOCAL_PORT + 1},
    ],
    ids=["connector-ip", "connector-port", "local-port"],
)
def test_echo_from_elsewhere_fails(kwargs: dict[str, object]) -> None:
    """The MAC binds the connector's IP and port and the listener's port."""
    minter = CookieMinter(SECRET)
    assert _check(minter, _echo(minter), **kwargs) is CookieVerdict.FORGED  # type: ignore[arg-type]


def test_ipv6_connector_is_bound() -> None:
    """An IPv6 connector address is bound too: a different address fails."""
    minter = CookieMinter(SECRET)
    tag = b"\x01\x02\x03"
    ltag = minter.listener_tag(("2001:db8::1", 7), tag)
    mac = minter.mint(
        listener_tag=ltag,
        connector_tag=tag,
        version=1,
        expiration=NOW + 5,
        connector=("2001:db8::1", 7),
        local_port=LOCAL_PORT,
    )
    echo = wire.CookieEcho(ltag, tag, 1, NOW + 5, mac)
    assert _check(minter, echo, connector=("2001:db8::1", 7)) is CookieVerdict.VALID
    assert _check(minter, echo, connector=("2001:db8::2", 7)) is CookieVerdict.FORGED


def test_expired_cookie_fails() -> None:
    """A genuine cookie presented after its expiration second is EXPIRED, not VALID."""
    minter = CookieMinter(SECRET)
    echo = _echo(minter, expiration=NOW + 5)
    assert _check(minter, echo, now=NOW + 5) is CookieVerdict.VALID
    assert _check(minter, echo, now=NOW + 6) is CookieVerdict.EXPIRED
    assert _check(minter, echo, now=NOW + 3600) is CookieVerdict.EXPIRED


def test_other_secret_fails() -> None:
    """A cookie minted under another secret does not verify."""
    a = CookieMinter(SECRET)
    b = CookieMinter(b"another secret of enough length")
    assert _check(b, _echo(a)) is CookieVerdict.FORGED


def test_listener_tag_is_stable_and_address_bound() -> None:
    """The listener tag is 3 bytes, repeatable per (address, tag), different elsewhere."""
    minter = CookieMinter(SECRET)
    tag = minter.listener_tag(CONNECTOR, b"\xaa\xbb\xcc")
    assert len(tag) == 3
    assert tag == CookieMinter(SECRET).listener_tag(CONNECTOR, b"\xaa\xbb\xcc")
    others = {minter.listener_tag(("192.0.2.7", 40000 + i), b"\xaa\xbb\xcc") for i in range(1, 20)}
    assert len(others | {tag}) > 15


def test_random_minters_do_not_share_secrets() -> None:
    """Two random minters reject each other's cookies; the injected source is used."""
    a = CookieMinter.random()
    b = CookieMinter.random()
    assert _check(b, _echo(a)) is CookieVerdict.FORGED
    c = CookieMinter.random(lambda n: b"\x07" * n)
    d = CookieMinter(b"\x07" * 32)
    assert _check(d, _echo(c)) is CookieVerdict.VALID


def test_short_secret_refused() -> None:
    """A secret too short to be a key is refused at construction."""
    with pytest.raises(ValueError):
        CookieMinter(b"short")


def test_secret_shared_through_file(tmp_path: Path) -> None:
    """Two minters loading the same secret file accept each other's cookies."""
    path = tmp_path / "secret"
    first = CookieMinter.from_file(path)
    second = CookieMinter.from_file(path)
    assert _check(second, _echo(first)) is CookieVerdict.VALID
    assert first.listener_tag(CONNECTOR, b"abc") == second.listener_tag(CONNECTOR, b"abc")
    other = CookieMinter.from_file(tmp_path / "other")
    assert _check(other, _echo(first)) is CookieVerdict.FORGED


def test_secret_file_created_private(tmp_path: Path) -> None:
    """A missing secret file is created readable by its owner only, with no temp files left."""
    path = tmp_path / "secret"
    CookieMinter.from_file(path)
    mode = stat.S_IMODE(os.stat(path).st_mode)
    assert mode == 0o600
    assert len(path.read_bytes()) >= 16
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secret"]


def test_existing_secret_file_is_used(tmp_path: Path) -> None:
    """An existing secret file is read, not replaced."""
    path = tmp_path / "secret"
    path.write_bytes(SECRET)
    loaded = CookieMinter.from_file(path)
    assert _check(CookieMinter(SECRET), _echo(loaded)) is CookieVerdict.VALID
    assert path.read_bytes() == SECRET


NEW_SECRET = b"the secret that replaces the first"


def test_rotation_mints_under_the_new_secret() -> None:
    """After a rotation cookies and tags come from the new secret, as a fresh minter's do."""
    minter = CookieMinter(SECRET)
    minter.rotate(NEW_SECRET, now=NOW, grace=5)
    fresh = CookieMinter(NEW_SECRET)
    assert _echo(minter) == _echo(fresh)
    assert minter.listener_tag(CONNECTOR, b"abc") == fresh.listener_tag(CONNECTOR, b"abc")
    assert _check(CookieMinter(SECRET), _echo(minter)) is CookieVerdict.FORGED


def test_previous_secret_is_accepted_for_the_grace_only() -> None:
    """A cookie of the previous secret verifies until the grace ends, whatever it claims."""
    minter = CookieMinter(SECRET)
    before = _echo(minter, expiration=NOW + 5)
    claims_more = _echo(minter, expiration=NOW + 3600)
    minter.rotate(NEW_SECRET, now=NOW, grace=5)
    assert _check(minter, before, now=NOW + 5) is CookieVerdict.VALID
    assert _check(minter, claims_more, now=NOW + 5) is CookieVerdict.VALID
    assert _check(minter, claims_more, now=NOW + 6) is CookieVerdict.FORGED
    # Only one secret back: two rotations forget the first.
    minter.rotate(b"a third secret, rotated in again", now=NOW + 1, grace=5)
    assert _check(minter, before, now=NOW + 2) is CookieVerdict.FORGED


def test_rotating_to_a_short_secret_changes_nothing() -> None:
    """A rotation to a secret too short is refused and the current secret stays."""
    minter = CookieMinter(SECRET)
    with pytest.raises(ValueError):
        minter.rotate(b"short", now=NOW, grace=5)
    assert _echo(minter) == _echo(CookieMinter(SECRET))
