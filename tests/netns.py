"""Hosts on one machine: network namespaces joined by a bridge, for the cross-host tests.

``Farm(["hostA", "hostB"])`` makes, for one test:

* a namespace ``dbt-<tag>-br`` holding a Linux bridge (nothing is added to the initial namespace:
  every link is made inside the bridge's namespace and its host end moved into the host's);
* per host a namespace ``dbt-<tag>-<k>`` with ``lo`` up and a veth to the bridge carrying its own
  address in a private subnet ``10.213.<n>.0/24`` (n random: two farms never meet anyway, each has
  its own bridge namespace);
* ``argv(host, ...)`` runs a command in the host: ``ip netns exec NS env DBTOOL_HOSTNAME=hostX ...``
  (dbtool takes its own host name from that variable everywhere).

``down()`` kills every process in the farm's namespaces (SIGTERM, then SIGKILL) and deletes the
namespaces, which destroys their links; it is safe to call after a failed or partial ``up()``.

Prerequisites (root, ``ip``, namespaces and bridges in this kernel) are checked by ``require()``:
a missing one skips the test, except under ``CI=true``, where it fails it — CI must run these tests.
"""

from __future__ import annotations

import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

import pytest

PYTHON = sys.executable
IP_TIMEOUT = 30  # seconds for one `ip` command (they take milliseconds)


class Unsupported(Exception):
    """A prerequisite of the farm is missing on this machine."""


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def missing_prerequisite() -> str | None:
    """Why farms cannot be made here (None when they can, as far as can be told without trying)."""
    if sys.platform != "linux":
        return f"network namespaces need Linux (this is {sys.platform})"
    if os.geteuid() != 0:
        return "network namespaces need root (run the tests as root)"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    return None


def unavailable(why: str) -> None:
    """Skip the test for a missing prerequisite — or, under CI=true, fail it."""
    if in_ci():
        pytest.fail(f"CI=true and the farm tests cannot run: {why}", pytrace=False)
    pytest.skip(why)


def require() -> None:
    why = missing_prerequisite()
    if why:
        unavailable(why)


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=IP_TIMEOUT)
    if check and proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: exit {proc.returncode}: {proc.stderr.strip()}")
    return proc


@dataclass
class Host:
    name: str  # its $DBTOOL_HOSTNAME
    netns: str  # its namespace
    address: str  # its veth's address
    veth: str  # its end of the veth (inside netns)
    port: str  # the bridge's end (inside the bridge's namespace)


class Farm:
    def __init__(self, names: list[str]) -> None:
        self.tag = secrets.token_hex(3)
        self.subnet = random.randint(1, 254)
        self.bridge_ns = f"dbt-{self.tag}-br"
        self.bridge = f"dbt{self.tag}br"  # link names: at most 15 characters
        self.hosts = {
            name: Host(
                name=name,
                netns=f"dbt-{self.tag}-{k}",
                address=f"10.213.{self.subnet}.{11 + k}",
                veth=f"dbt{self.tag}h{k}",
                port=f"dbt{self.tag}p{k}",
            )
            for k, name in enumerate(names)
        }
        self.made: list[str] = []  # namespaces made, in order
        self.procs: list[subprocess.Popen] = []

    # -- making and unmaking ------------------------------------------------------------------------
    def up(self) -> Farm:
        try:
            self._add_netns(self.bridge_ns)
        except RuntimeError as err:
            raise Unsupported(f"cannot create a network namespace here ({err})") from None
        br = ("-n", self.bridge_ns)
        ip(*br, "link", "set", "lo", "up")
        try:
            ip(*br, "link", "add", self.bridge, "type", "bridge")
        except RuntimeError as err:
            raise Unsupported(f"cannot create a bridge here ({err})") from None
        ip(*br, "link", "set", self.bridge, "up")
        for host in self.hosts.values():
            self._add_netns(host.netns)
            try:
                ip(*br, "link", "add", host.port, "type", "veth", "peer", "name", host.veth)
            except RuntimeError as err:
                raise Unsupported(f"cannot create a veth pair here ({err})") from None
            ip(*br, "link", "set", host.veth, "netns", host.netns)
            ip(*br, "link", "set", host.port, "master", self.bridge)
            ip(*br, "link", "set", host.port, "up")
            hn = ("-n", host.netns)
            ip(*hn, "link", "set", "lo", "up")
            ip(*hn, "addr", "add", f"{host.address}/24", "dev", host.veth)
            ip(*hn, "link", "set", host.veth, "up")
        return self

    def _add_netns(self, name: str) -> None:
        ip("netns", "add", name)
        self.made.append(name)

    def down(self) -> list[str]:
        """Kill what runs in the farm, delete its namespaces; returns what could not be cleaned."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
        pids = self.pids()
        for sig in (signal.SIGTERM, signal.SIGKILL):  # politely first, then for good
            for pid in pids:
                _signal(pid, sig)
            deadline = time.monotonic() + 5
            while pids and time.monotonic() < deadline:
                time.sleep(0.05)
                pids = self.pids()
        for proc in self.procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
        problems = [f"pid {pid} still runs in the farm" for pid in pids]
        for name in reversed(self.made):
            proc = ip("netns", "del", name, check=False)
            if proc.returncode != 0:
                problems.append(f"ip netns del {name}: {proc.stderr.strip()}")
        left = set(ip("netns", "list", check=False).stdout.split())
        problems += [f"namespace {name} is left" for name in self.made if name in left]
        self.made = []
        return problems

    def __enter__(self) -> Farm:
        try:
            return self.up()
        except BaseException:
            self.down()
            raise

    def __exit__(self, *exc: object) -> None:
        self.down()

    # -- using --------------------------------------------------------------------------------------
    def argv(self, host: str, *argv: str, env: dict | None = None) -> list[str]:
        """argv that runs ``argv`` in ``host``'s namespace, with its host name (and ``env``) set."""
        values = [f"{k}={v}" for k, v in {"DBTOOL_HOSTNAME": host, **(env or {})}.items()]
        return ["ip", "netns", "exec", self.hosts[host].netns, "env", *values, *argv]

    def dbtool_argv(self, host: str, *args: str) -> list[str]:
        return self.argv(host, PYTHON, "-m", "dbtool.cli", *args)

    def run(self, host: str, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(host, *argv), capture_output=True, text=True, timeout=timeout)

    def popen(self, host: str, *argv: str, **kw: object) -> subprocess.Popen:
        """A process in ``host`` (killed by ``down()`` if still running)."""
        proc = subprocess.Popen(self.argv(host, *argv), **kw)
        self.procs.append(proc)
        return proc

    def set_link(self, host: str, up: bool) -> None:
        """Cut (or restore) a host's link: its veth end down (up)."""
        h = self.hosts[host]
        ip("-n", h.netns, "link", "set", h.veth, "up" if up else "down")

    def pids(self, host: str | None = None) -> list[int]:
        """Pids of the processes in one host's namespace (or in all of the farm's)."""
        names = [self.hosts[host].netns] if host else list(self.made)
        found = []
        for name in names:
            proc = ip("netns", "pids", name, check=False)
            found += [int(p) for p in proc.stdout.split() if p.isdigit()]
        return found

    def host_of(self, pid: int) -> str | None:
        """The host (or "bridge") whose namespace process ``pid`` is in; None: none of the farm's."""
        try:
            inode = os.stat(f"/proc/{pid}/ns/net").st_ino
        except OSError:
            return None
        spaces = {h.netns: h.name for h in self.hosts.values()} | {self.bridge_ns: "bridge"}
        for netns, name in spaces.items():
            try:
                if os.stat(f"/run/netns/{netns}").st_ino == inode:
                    return name
            except OSError:
                continue
        return None


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
