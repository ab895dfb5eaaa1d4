"""
MNET echo backends behind a real UDP load balancer: nginx's ``stream`` module.

    .venv/bin/python tools/loadbalanced.py [--listen 127.0.0.1:9000] [--backends 2]
        [--proxy-timeout 60] [--workers 1] [--trace] [--dir DIR]

Starts ``--backends`` ``twistd -n mnet-echo`` processes on 127.0.0.1 (free
ports, one shared cookie secret file) and nginx in front of them, prints
what it started, and runs until interrupted (Ctrl-C or SIGTERM), then stops
them all.  Clients connect to the ``--listen`` address, e.g.
``mnet-cat 127.0.0.1 9000``.  nginx runs from a directory of its own (its
configuration, pid file and logs; nothing under /etc or /var is touched),
by default a temporary one that is removed afterwards.

The upstream hashes the client's address *and port* (``hash
$remote_addr$remote_port consistent``): every MNET connector has a UDP port
of its own, so all the datagrams of a session reach the same backend, and
sessions spread over the backends.  nginx keeps one UDP socket towards the
backend per client address and port; the backend sees that socket's address,
not the client's.  Idle sessions must send something within
``proxy_timeout``: MNET's keep-alives (every 15 s of silence by default) do,
which is why the timeout here is 60 s.

Needs Debian's ``nginx`` and ``libnginx-mod-stream`` (``install_nginx``
installs them as root).  Used by tests/test_loadbalancer.py.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: twistd in the foreground, without a pid file (several run in one directory).
TWISTD = [
    sys.executable,
    "-c",
    "from twisted.scripts.twistd import run; run()",
    "-n",
    "--pidfile=",
]

#: Debian's packages: the server and its dynamic stream module.
NGINX_PACKAGES = ("nginx", "libnginx-mod-stream")


class NginxMissing(Exception):
    """nginx, or its stream module, is not there (the message says what to install)."""


@dataclass(frozen=True)
class Nginx:
    binary: str
    #: The stream module to load, or None when it is built in.
    module: str | None


def find_nginx() -> Nginx:
    """The nginx binary and its stream module, or NginxMissing saying what is absent."""
    binary = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if binary is None:
        raise NginxMissing("no nginx binary (Debian: apt-get install nginx libnginx-mod-stream)")
    # nginx -V prints its configure arguments on stderr.
    configure = subprocess.run(
        [binary, "-V"], capture_output=True, text=True, timeout=10, check=False
    ).stderr
    if re.search(r"--with-stream(\s|$)", configure):
        return Nginx(binary, None)
    if "--with-stream=dynamic" not in configure:
        raise NginxMissing(f"{binary} was built without the stream module")
    found = re.search(r"--modules-path=(\S+)", configure)
    modules = found.group(1) if found else "/usr/lib/nginx/modules"
    module = os.path.join(modules, "ngx_stream_module.so")
    if not os.path.exists(module):
        raise NginxMissing(f"no {module} (Debian: apt-get install libnginx-mod-stream)")
    return Nginx(binary, module)


def install_nginx(timeout: float = 600.0) -> float:
    """Install Debian's nginx and stream module with apt-get; the seconds it took.

    Tries without refreshing the package lists first (quick where they are
    current), then after ``apt-get update``; all within ``timeout`` seconds.
    Raises NginxMissing on failure.
    """
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    started = time.monotonic()

    def apt_get(*args: str) -> subprocess.CompletedProcess[str]:
        left = timeout - (time.monotonic() - started)
        # Another apt-get (another test run, say) may hold dpkg's lock: wait for it.
        command = ["apt-get", "-o", f"DPkg::Lock::Timeout={max(1, int(left))}", *args]
        try:
            return subprocess.run(
                command, env=env, capture_output=True, text=True, timeout=left, check=False
            )
        except (OSError, ValueError, subprocess.TimeoutExpired) as error:
            raise NginxMissing(f"apt-get {args[0]} failed: {error}") from error

    install = ("install", "-y", "-q", "--no-install-recommends", *NGINX_PACKAGES)
    done = apt_get(*install)
    if done.returncode != 0:
        done = apt_get("update", "-q")
        if done.returncode == 0:
            done = apt_get(*install)
    if done.returncode != 0:
        raise NginxMissing(f"apt-get {done.args[3]} failed: {done.stderr.strip()}")
    return time.monotonic() - started


def free_udp_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def answers_init(address: tuple[str, int], timeout: float) -> bool:
    """Whether an MNET listener answers an INIT at ``address`` with a COOKIE within ``timeout``.

    A COOKIE costs the listener no state, so this is a harmless readiness check.
    """
    from mnet_twisted import wire

    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(address)
        probe.settimeout(0.1)
        while time.monotonic() < deadline:
            try:
                probe.send(wire.Init(os.urandom(wire.TAG_SIZE)).to_bytes())
                reply = probe.recv(2048)
            except OSError:  # timeout, or ICMP port unreachable: not there yet
                time.sleep(0.05)
                continue
            if reply[:1] == bytes((wire.PacketType.COOKIE,)):
                return True
    return False


def nginx_config(
    directory: Path,
    nginx: Nginx,
    listen: tuple[str, int],
    backends: list[tuple[str, int]],
    proxy_timeout: float,
    workers: int,
) -> str:
    """nginx.conf for a UDP load balancer that keeps each client address:port on one backend."""
    load = f"load_module {nginx.module};\n" if nginx.module else ""
    servers = "".join(
        # max_fails/fail_timeout are nginx's defaults, written out because they
        # decide how soon a dead backend's sessions are sent elsewhere.
        f"        server {host}:{port} max_fails=1 fail_timeout=10s;\n"
        for host, port in backends
    )
    return f"""{load}daemon off;
master_process on;
worker_processes {workers};
pid {directory}/nginx.pid;
error_log {directory}/error.log info;
# Each MNET session holds two connections of a worker, each a file
# descriptor: the client's and the socket towards its backend.
worker_rlimit_nofile 16384;
events {{ worker_connections 16384; }}
stream {{
    log_format mnet '$remote_addr:$remote_port $upstream_addr $status $session_time'
                    ' $bytes_received $bytes_sent';
    access_log {directory}/access.log mnet;
    upstream mnet_backends {{
        hash $remote_addr$remote_port consistent;
{servers}    }}
    server {{
        # reuseport: one socket per worker, so the kernel keeps each client
        # address:port on one worker (and so on one nginx UDP session).
        listen {listen[0]}:{listen[1]} udp reuseport;
        proxy_pass mnet_backends;
        # No proxy_responses: an MNET session is a stream of datagrams both
        # ways, not request and reply.  The session ends after this much
        # silence both ways.
        proxy_timeout {proxy_timeout:g}s;
    }}
}}
"""


def _escape(text: str) -> str:
    """A value for a Twisted endpoint string."""
    return text.replace("\\", "\\\\").replace(":", "\\:")


class LoadBalancedEcho:
    """``backends`` mnet-echo processes behind one nginx, all on loopback, in ``directory``."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        listen: tuple[str, int] = ("127.0.0.1", 0),
        backend_host: str = "127.0.0.1",
        backends: int = 2,
        proxy_timeout: float = 60.0,
        workers: int = 1,
        trace: bool = False,
        stop_grace: float = 10.0,
        nginx: Nginx | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.nginx = nginx or find_nginx()
        self.listen = (listen[0], listen[1] or free_udp_port(listen[0]))
        self.backends = [(backend_host, free_udp_port(backend_host)) for _ in range(backends)]
        self.proxy_timeout = proxy_timeout
        self.workers = workers
        self.trace_directory = self.directory / "trace" if trace else None
        #: How long a backend told to stop lets its sessions close gracefully.
        self.stop_grace = stop_grace
        self.secret_file = self.directory / "cookie.secret"
        self.processes: list[subprocess.Popen[bytes]] = []
        self.nginx_process: subprocess.Popen[bytes] | None = None

    def backend_log(self, index: int) -> Path:
        return self.directory / f"backend-{index}.log"

    def start(self, timeout: float = 15.0) -> None:
        """Start the backends and nginx; return once a handshake through nginx is answered."""
        from mnet_twisted.secretfile import load_or_create

        self.directory.mkdir(parents=True, exist_ok=True)
        if self.trace_directory is not None:
            self.trace_directory.mkdir(exist_ok=True)
        load_or_create(self.secret_file)  # before the backends, which would race to create it
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
        for index, (host, port) in enumerate(self.backends):
            listen = (
                f"mnet:{port}:interface={host}:stopGrace={self.stop_grace:g}"
                f":secretFile={_escape(str(self.secret_file))}"
                # Each accepted session's log line tells which backend holds it.
                ":logSessions=yes"
            )
            if self.trace_directory is not None:
                listen += f":trace={_escape(str(self.trace_directory))}"
            with open(self.backend_log(index), "wb") as log:
                self.processes.append(
                    subprocess.Popen(
                        [*TWISTD, "mnet-echo", "--listen", listen],
                        cwd=self.directory,
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
        conf = self.directory / "nginx.conf"
        conf.write_text(
            nginx_config(
                self.directory,
                self.nginx,
                self.listen,
                self.backends,
                self.proxy_timeout,
                self.workers,
            )
        )
        deadline = time.monotonic() + timeout
        for index, address in enumerate(self.backends):
            if not answers_init(address, deadline - time.monotonic()):
                self.stop()
                raise RuntimeError(f"backend {index} ({address}) did not start; see its log")
        with open(self.directory / "nginx.out", "wb") as out:
            # -e: the error log from the start, before the configuration is read.
            self.nginx_process = subprocess.Popen(
                [
                    self.nginx.binary,
                    "-p",
                    str(self.directory),
                    "-c",
                    str(conf),
                    "-e",
                    str(self.directory / "error.log"),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        if not answers_init(self.listen, deadline - time.monotonic()):
            self.stop()
            raise RuntimeError(f"nginx did not start; see {self.directory}/error.log")

    def kill_backend(self, index: int, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to backend ``index`` and wait for it to end."""
        process = self.processes[index]
        process.send_signal(sig)
        process.wait(timeout=15)

    def reload_nginx(self) -> None:
        """``nginx -s reload``: new workers with the configuration read again."""
        if self.nginx_process is None:
            raise RuntimeError("nginx is not running")
        self.nginx_process.send_signal(signal.SIGHUP)

    def backend_of(self, listener_tag: bytes) -> int | None:
        """Which backend holds the session whose listener tag is ``listener_tag`` (needs trace).

        Each backend writes a trace file per session, named after its own
        port and the session's tag; a connector knows that tag as its peer's.
        """
        if self.trace_directory is None:
            raise RuntimeError("started without trace=True")
        for path in self.trace_directory.glob(f"mnet-*-{listener_tag.hex()}.jsonl"):
            port = int(path.name.split("-")[2])
            for index, (_, backend_port) in enumerate(self.backends):
                if port == backend_port:
                    return index
        return None

    def peers_seen_by(self, index: int) -> list[tuple[str, int]]:
        """The peer addresses backend ``index`` logged for the sessions it accepted."""
        text = self.backend_log(index).read_text(errors="replace")
        return [
            (host, int(port)) for host, port in re.findall(r" accepted \(([\d.]+):(\d+)\)", text)
        ]

    def stop(self) -> None:
        """Stop every backend still running, then nginx (SIGTERM, then SIGKILL).

        Backends first: the SHUTDOWN they send their sessions goes out through nginx.
        """
        for group in (self.processes, [self.nginx_process]):
            running = [p for p in group if p is not None and p.poll() is None]
            for process in running:
                process.terminate()
            for process in running:
                try:
                    process.wait(timeout=self.stop_grace + 5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("--listen", default="127.0.0.1:9000", help="nginx's UDP address")
    parser.add_argument("--backends", type=int, default=2)
    parser.add_argument("--proxy-timeout", type=float, default=60.0, help="seconds")
    parser.add_argument("--workers", type=int, default=1, help="nginx worker processes")
    parser.add_argument("--trace", action="store_true", help="backends trace every session")
    parser.add_argument("--dir", help="nginx's and the backends' directory (default: temporary)")
    args = parser.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    try:
        nginx = find_nginx()
    except NginxMissing as missing:
        print(f"loadbalanced: {missing}", file=sys.stderr)
        return 2
    directory = args.dir or tempfile.mkdtemp(prefix="mnet-lb-")
    balancer = LoadBalancedEcho(
        directory,
        listen=(host, int(port)),
        backends=args.backends,
        proxy_timeout=args.proxy_timeout,
        workers=args.workers,
        trace=args.trace,
        nginx=nginx,
    )
    # SIGTERM ends the wait below as Ctrl-C does, so the children are stopped either way.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        balancer.start()
        nginx_process = balancer.nginx_process
        assert nginx_process is not None
        print(f"nginx (pid {nginx_process.pid}) on udp {host}:{balancer.listen[1]}")
        for index, (process, (bhost, bport)) in enumerate(
            zip(balancer.processes, balancer.backends, strict=True)
        ):
            print(f"backend {index} (pid {process.pid}) on udp {bhost}:{bport}")
        print(f"configuration and logs in {directory}; Ctrl-C stops", flush=True)
        while nginx_process.poll() is None:
            time.sleep(0.5)
        return 1  # nginx ended by itself
    except KeyboardInterrupt:
        return 0
    finally:
        balancer.stop()
        if not args.dir:
            shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
