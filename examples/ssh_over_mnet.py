"""
SSH through MNET, the way one would put MNET in front of an existing sshd:
``twistd mnet-forward`` on the server turns MNET sessions into TCP
connections to the SSH port, and the unmodified OpenSSH client reaches it
with ``mnet-cat`` as its ProxyCommand:

    server$ twistd -n mnet-forward --listen mnet:9022 --connect tcp:host=127.0.0.1:port=22
    client$ ssh -o ProxyCommand='mnet-cat %h %p' -p 9022 user@server

This script runs all of that on the loopback interface. A Twisted Conch
server stands in for sshd (this machine need not have one), with a host key
and one user's key made for the run in a temporary directory; the client
pins that host key. ``ssh`` then runs two commands over MNET: an ``echo``,
and ``sha256sum`` of 4 MiB of random bytes sent on its standard input,
whose answer must be the hash of what was sent.

    python examples/ssh_over_mnet.py

Needs ``/usr/bin/ssh`` and Twisted Conch (``pip install twisted[conch]``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shlex
import socket
import sys
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519
from twisted.conch.avatar import ConchUser
from twisted.conch.checkers import InMemorySSHKeyDB, SSHPublicKeyChecker
from twisted.conch.interfaces import IConchUser, ISession
from twisted.conch.ssh import keys
from twisted.conch.ssh.factory import SSHFactory
from twisted.conch.ssh.session import SSHSession
from twisted.cred.portal import IRealm, Portal
from twisted.internet import defer, error, protocol, task
from twisted.internet.endpoints import serverFromString
from twisted.python import components
from zope.interface import implementer

SSH = "/usr/bin/ssh"
USER = "demo"
PAYLOAD = 4 * 1024 * 1024


class User(ConchUser):
    """A logged-in user: may open sessions (commands), nothing else."""

    def __init__(self, name: bytes) -> None:
        super().__init__()
        self.username = name
        self.channelLookup[b"session"] = SSHSession


@implementer(ISession)
class Command:
    """What sshd does with ``ssh host COMMAND``: runs it under /bin/sh."""

    def __init__(self, user: User) -> None:
        self.process = None

    def execCommand(self, proto, command: bytes) -> None:  # type: ignore[no-untyped-def]
        from twisted.internet import reactor

        argv = ["/bin/sh", "-c", command.decode()]
        self.process = reactor.spawnProcess(proto, argv[0], argv, env=dict(os.environ))

    def eofReceived(self) -> None:
        if self.process is not None:
            self.process.closeStdin()  # the client's end of input reaches the command

    def closed(self) -> None:
        if self.process is not None:
            with contextlib.suppress(error.ProcessExitedAlready):
                self.process.signalProcess("KILL")

    def openShell(self, proto) -> None:  # type: ignore[no-untyped-def]
        raise NotImplementedError("this server runs commands only")

    def getPty(self, term, windowSize, modes) -> None:  # type: ignore[no-untyped-def]
        raise NotImplementedError("this server runs commands only")

    def windowChanged(self, newWindowSize) -> None:  # type: ignore[no-untyped-def]
        pass


components.registerAdapter(Command, User, ISession)


@implementer(IRealm)
class Realm:
    def requestAvatar(self, avatarId, mind, *interfaces):  # type: ignore[no-untyped-def]
        return IConchUser, User(avatarId), lambda: None


class Child(protocol.ProcessProtocol):
    """A child process fed ``stdin``; ``ready`` fires once ``waitFor`` shows in its output."""

    def __init__(self, stdin: bytes = b"", waitFor: bytes | None = None) -> None:
        self.stdin = stdin
        self.waitFor = waitFor
        self.out = b""
        self.err = b""
        self.ready: defer.Deferred[None] = defer.Deferred()
        self.ended: defer.Deferred[int | None] = defer.Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.stdin)
        self.transport.closeStdin()

    def outReceived(self, data: bytes) -> None:
        self.out += data
        if self.waitFor is not None and self.waitFor in self.out and not self.ready.called:
            self.ready.callback(None)

    def errReceived(self, data: bytes) -> None:
        self.err += data

    def processEnded(self, reason) -> None:  # type: ignore[no-untyped-def]
        if self.waitFor is not None and not self.ready.called:
            output = (self.out + self.err).decode(errors="replace")
            self.ready.errback(RuntimeError(f"the child ended before it was ready:\n{output}"))
        self.ended.callback(reason.value.exitCode)


def freeUDPPort() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def newKey() -> keys.Key:
    return keys.Key(ed25519.Ed25519PrivateKey.generate())


def sshFactory(hostKey: keys.Key, userKey: keys.Key) -> SSHFactory:
    factory = SSHFactory()
    checker = SSHPublicKeyChecker(InMemorySSHKeyDB({USER.encode(): [userKey.public()]}))
    factory.portal = Portal(Realm(), [checker])
    factory.publicKeys = {b"ssh-ed25519": hostKey.public()}
    factory.privateKeys = {b"ssh-ed25519": hostKey}
    return factory


async def ssh(  # type: ignore[no-untyped-def]
    reactor, directory: Path, port: int, command: str, stdin: bytes = b""
) -> bytes:
    """Runs ``command`` with the OpenSSH client, through mnet-cat to MNET ``port``."""
    proxy = f"{shlex.quote(sys.executable)} -m mnet_twisted.cat %h %p"
    argv = [
        SSH,
        *("-F", "/dev/null", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10"),
        *("-i", str(directory / "id_ed25519"), "-o", "IdentitiesOnly=yes"),
        *("-o", f"UserKnownHostsFile={directory / 'known_hosts'}"),
        *("-o", "StrictHostKeyChecking=yes", "-o", "HostKeyAlias=mnet-example"),
        *("-o", f"ProxyCommand={proxy}", "-p", str(port)),
        f"{USER}@127.0.0.1",
        command,
    ]
    child = Child(stdin)
    reactor.spawnProcess(child, SSH, argv, env=dict(os.environ))
    code = await child.ended
    if code != 0:
        raise SystemExit(
            f"ssh {command!r} exited with {code}: {child.err.decode(errors='replace')}"
        )
    return child.out


async def main(reactor) -> None:  # type: ignore[no-untyped-def]
    with tempfile.TemporaryDirectory() as name:
        directory = Path(name)
        host_key, user_key = newKey(), newKey()
        identity = directory / "id_ed25519"
        identity.write_bytes(user_key.toString("openssh"))
        identity.chmod(0o600)  # ssh refuses a private key others can read
        host_line = b"mnet-example " + host_key.public().toString("openssh") + b"\n"
        (directory / "known_hosts").write_bytes(host_line)

        sshd = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(
            sshFactory(host_key, user_key)
        )
        mnet_port = freeUDPPort()
        forward = [
            *(sys.executable, "-m", "twisted", "mnet-forward"),
            *("--listen", f"mnet:{mnet_port}:interface=127.0.0.1"),
            *("--connect", f"tcp:host=127.0.0.1:port={sshd.getHost().port}"),
        ]
        forwarder = Child(waitFor=b"starting on")  # the UDP port is bound
        reactor.spawnProcess(forwarder, sys.executable, forward, env=dict(os.environ))
        try:
            await forwarder.ready
            greeting = await ssh(reactor, directory, mnet_port, "echo hello over ssh over MNET")
            print(greeting.decode().strip())
            payload = os.urandom(PAYLOAD)
            answer = await ssh(reactor, directory, mnet_port, "sha256sum", payload)
            sent = hashlib.sha256(payload).hexdigest()
            received = answer.split()[0].decode()
            if received != sent:
                raise SystemExit(f"sha256 differs: sent {sent}, the server hashed {received}")
            print(f"{PAYLOAD} bytes through ssh over MNET: sha256 {received[:16]}... matches")
        finally:
            if forwarder.transport.pid is not None:
                forwarder.transport.signalProcess("TERM")
            await forwarder.ended
            await sshd.stopListening()


if __name__ == "__main__":
    if not Path(SSH).exists():
        sys.exit(f"{SSH} is not installed")
    task.react(lambda reactor: defer.ensureDeferred(main(reactor)))
