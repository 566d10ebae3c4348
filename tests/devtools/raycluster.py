"""Ray clusters on this machine, each inside a network namespace that has loopback alone.

Ray listens on every interface whatever address it is given (ray #26293), so the tests and
benchmarks never run it in the machine's own namespace. `Namespace` holds one open (`unshare
-n`, then `ip link set lo up`) with a sleeping process, and runs commands in it with `nsenter
--net`; `Cluster` starts a head and worker nodes there with `ray start` and stops them with
`ray stop`. `processes()` lists every process in the namespace, so a test can show that
nothing was left behind.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RAY_PORT = 6379  # inside a namespace of its own, the default port is always free
STOP_TIMEOUT_S = 60


def unavailable() -> str | None:
    """Why Ray cannot be run in a namespace here, or None when it can."""
    for tool in ("unshare", "nsenter", "ip"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (util-linux / iproute2)"
    try:
        import ray  # noqa: F401
    except ImportError:
        return "ray is not installed (pip install 'mnist-edge[ray]'; make test installs it)"
    probe = subprocess.run(["unshare", "-n", "ip", "link", "set", "lo", "up"],
                           capture_output=True, text=True, timeout=30)  # fmt: skip
    if probe.returncode != 0:
        return f"unshare -n is not permitted here: {probe.stderr.strip() or probe.returncode}"
    return None


class Namespace:
    """A network namespace with loopback alone, open while this object lives."""

    def __init__(self) -> None:
        self.holder = subprocess.Popen(
            ["unshare", "-n", "sh", "-c", "ip link set lo up && echo up && exec sleep 86400"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        line = self.holder.stdout.readline().strip()
        if line != "up":
            raise RuntimeError("cannot open a network namespace: " + self.holder.stderr.read())
        self.path = f"/proc/{self.holder.pid}/ns/net"
        self.inode = os.stat(self.path).st_ino

    def cmd(self, args: list[str]) -> list[str]:
        return ["nsenter", f"--net={self.path}", "--", *map(str, args)]

    def run(self, args: list[str], **kwargs) -> subprocess.CompletedProcess:
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        return subprocess.run(self.cmd(args), **kwargs)

    def popen(self, args: list[str], **kwargs) -> subprocess.Popen:
        return subprocess.Popen(self.cmd(args), **kwargs)

    def processes(self) -> dict[int, str]:
        """pid -> command line of every process in the namespace but its holder."""
        found = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == self.holder.pid:
                continue
            try:
                if os.stat(entry / "ns" / "net").st_ino != self.inode:
                    continue
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if cmdline.strip():
                found[int(entry.name)] = cmdline.strip()
        return found

    def close(self) -> None:
        if self.holder.poll() is None:
            self.holder.kill()
        self.holder.wait()


def ray_bin() -> str:
    """The `ray` command of the Python that runs this (the venv's)."""
    here = Path(sys.executable).parent / "ray"
    return str(here) if here.exists() else "ray"


def ray_env(home: str, address: str | None = None, token: str | None = None) -> dict[str, str]:
    """The environment of a command in the namespace: HOME of its own (Ray keeps its
    authentication token in ~/.ray), the cluster's address and token when there is one."""
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "HOME": home}
    for name in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        env.pop(name, None)
    if address:
        env["RAY_ADDRESS"] = address
    if token:  # Ray 2.5x+: nodes and clients prove they belong with a shared token
        env |= {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    return env


class Cluster:
    """A head node with `cpus[0]` CPUs and a worker node per further entry, in `ns`."""

    def __init__(self, ns: Namespace, cpus: tuple[int, ...] = (2,)) -> None:
        self.ns = ns
        self.address = f"127.0.0.1:{RAY_PORT}"
        # short: Ray's unix sockets live under it, and a socket path has at most 107 bytes
        self.temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
        self.token = secrets.token_hex(32)
        self.env = ray_env(self.temp, self.address, self.token)
        self.node_env = ray_env(self.temp, None, self.token)
        common = ["--node-ip-address", "127.0.0.1", "--disable-usage-stats"]
        self.started = time.monotonic()
        self._ray(["start", "--head", "--port", RAY_PORT, "--num-cpus", cpus[0],
                   "--include-dashboard=false", "--temp-dir", self.temp, *common])  # fmt: skip
        for n in cpus[1:]:
            self._ray(["start", "--address", self.address, "--num-cpus", n, *common])
        self.start_s = time.monotonic() - self.started

    def _ray(self, args: list) -> str:
        r = self.ns.run([ray_bin(), *args], env=self.node_env, timeout=180)
        if r.returncode != 0:
            raise RuntimeError(f"ray {' '.join(map(str, args[:2]))} failed: {r.stderr[-2000:]}")
        return r.stdout

    def pids(self, title: str) -> list[int]:
        """Processes of the cluster whose title (Ray sets `ray::ClassName...`) holds `title`."""
        return [pid for pid, cmd in self.ns.processes().items() if title in cmd]

    def stop(self) -> dict[int, str]:
        """`ray stop`; the namespace's processes that are left afterwards."""
        self.ns.run([ray_bin(), "stop"], env=self.node_env, timeout=STOP_TIMEOUT_S)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while self.ns.processes() and time.monotonic() < deadline:
            time.sleep(0.2)
        left = self.ns.processes()
        shutil.rmtree(self.temp, ignore_errors=True)
        return left
