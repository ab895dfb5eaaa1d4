"""
A cookie secret shared through a file, and its rotation.

Several processes serving one port (``SO_REUSEPORT`` workers, or restarts of
one server) accept each other's cookies when they read their secret from the
same file.  Rotating it means writing a new secret in its place, atomically;
each listener notices the change (``SecretFileWatcher``) and keeps accepting
cookies of the previous secret for one cookie lifetime, so no handshake in
flight fails because of the rotation.

    python -m mnet_twisted.secretfile rotate /var/lib/mnet/cookie.secret
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

__all__ = ["SECRET_SIZE", "SecretFileWatcher", "load_or_create", "rotate"]

SECRET_SIZE = 32


def _write_new(target: Path, *, replace: bool) -> None:
    # Written whole to a private temporary file first, so no reader ever sees
    # a short secret, and mode 0600 from the start.
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(os.urandom(SECRET_SIZE))
            handle.flush()
            os.fsync(handle.fileno())
        if replace:
            os.replace(temporary, target)
        else:
            # If another process won the race to create it, its secret stands.
            with contextlib.suppress(FileExistsError):
                os.link(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)


def load_or_create(path: str | os.PathLike[str]) -> bytes:
    """The secret in ``path``; the first process to get there creates it at random."""
    target = Path(path)
    if not target.exists():
        _write_new(target, replace=False)
    return target.read_bytes()


def rotate(path: str | os.PathLike[str]) -> None:
    """Put a new random secret in ``path`` (atomically: readers see the old or the new)."""
    _write_new(Path(path), replace=True)


class SecretFileWatcher:
    """Tells when the secret in a file has changed since it was last read.

    ``os.replace`` gives the file a new inode, and an edit in place a new
    modification time; either makes ``poll`` read the file again.
    """

    def __init__(self, path: str | os.PathLike[str], secret: bytes) -> None:
        self.path = Path(path)
        self.secret = secret
        self._seen = self._identity()

    def _identity(self) -> tuple[int, int, int] | None:
        try:
            status = self.path.stat()
        except OSError:
            return None
        return (status.st_ino, status.st_mtime_ns, status.st_size)

    def poll(self) -> bytes | None:
        """The new secret if the file now holds another one, else ``None``.

        Raises ``OSError`` if the file changed but cannot be read (it is read
        again at the next poll).
        """
        identity = self._identity()
        if identity is None or identity == self._seen:
            return None
        secret = self.path.read_bytes()
        self._seen = identity
        if secret == self.secret:
            return None
        self.secret = secret
        return secret


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mnet_twisted.secretfile",
        description="Create or rotate an MNET cookie secret file shared by listeners.",
    )
    parser.add_argument("action", choices=["create", "rotate"])
    parser.add_argument("path", help="the secret file (mode 0600)")
    options = parser.parse_args(argv)
    try:
        if options.action == "create":
            load_or_create(options.path)
        else:
            rotate(options.path)
    except OSError as error:
        print(f"{parser.prog}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
