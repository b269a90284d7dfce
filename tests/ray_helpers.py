"""A real Ray cluster of two nodes on this machine's loopback, started with `ray start` and
stopped by the test: each node runs in a session of its own, so it is stopped (or killed, as a
crashed machine) by signalling exactly the processes of that session, never by name."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Ray replaces 127.0.0.1 (and "localhost") in node and cluster addresses by the machine's network
# address; other addresses of the loopback range are taken as they are, so the whole cluster and
# all its traffic stay on this machine's loopback interface.
HEAD_IP = "127.0.0.2"
# A node whose processes are gone is declared dead after 3 missed 1-second health checks (Ray's
# defaults take about 15 seconds), so the test's worker outage is short.
FAST_DEATH = {"health_check_period_ms": 1000, "health_check_failure_threshold": 3}
WORKER_IP = "127.0.0.3"


def ray_cli() -> str | None:
    """The `ray` command beside this Python (None when Ray is not installed)."""
    found = Path(sys.executable).with_name("ray")
    return str(found) if found.exists() else shutil.which("ray")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HEAD_IP, 0))
        return sock.getsockname()[1]


def _session_pids(sid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid:  # after the command name: state, ppid, pgrp, session
            pids.append(int(entry))
    return pids


class RayNode:
    """One `ray start --block` node; `kill()` SIGKILLs every process of its session."""

    def __init__(self, temp_dir: Path, env: dict[str, str], *args: str):
        self.log = open(temp_dir / f"node-{time.monotonic_ns()}.log", "wb")
        self.process = subprocess.Popen(
            [ray_cli(), "start", "--block", "--disable-usage-stats", *args],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.sid = self.process.pid

    def kill(self) -> None:
        for _ in range(3):  # raylet may still be forking workers: sweep until none is left
            pids = _session_pids(self.sid)
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.3)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        self.log.close()


class LocalCluster:
    """A head (no CPUs: it only coordinates) and one worker node with `worker_cpus` CPUs."""

    def __init__(self, temp_dir: Path, pythonpath: str, worker_cpus: int = 2):
        self.temp_dir = temp_dir
        # Ray's Unix sockets live under its temp dir, and their paths may not exceed 107 bytes
        self.ray_dir = Path(tempfile.mkdtemp(prefix="xmodal-ray-"))
        self.port = free_port()
        self.address = f"{HEAD_IP}:{self.port}"
        self.worker_cpus = worker_cpus
        # token authentication, with a token of this cluster's own that every node and client is given
        self.env = {
            **os.environ,
            "PYTHONPATH": pythonpath,
            "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": secrets.token_hex(32),
        }
        self.nodes: list[RayNode] = []
        self.worker: RayNode | None = None

    def start(self) -> None:
        common = ["--object-store-memory=80000000", "--include-dashboard=false"]
        spill = f"--temp-dir={self.ray_dir}"
        head = RayNode(
            self.temp_dir,
            self.env,
            "--head",
            f"--node-ip-address={HEAD_IP}",
            f"--port={self.port}",
            "--num-cpus=0",
            spill,
            *common,
            f"--system-config={json.dumps(FAST_DEATH)}",
        )
        self.nodes.append(head)
        self.wait_for_nodes(1)
        self.start_worker()

    def start_worker(self) -> None:
        self.worker = RayNode(
            self.temp_dir,
            self.env,
            f"--address={self.address}",
            f"--node-ip-address={WORKER_IP}",
            f"--num-cpus={self.worker_cpus}",
            "--object-store-memory=80000000",
            f"--temp-dir={self.ray_dir}",
        )
        self.nodes.append(self.worker)
        self.wait_for_nodes(2)

    def kill_worker(self) -> None:
        assert self.worker is not None
        self.worker.kill()
        self.worker = None

    def alive_nodes(self) -> int:
        """Nodes the cluster counts as alive (asked through `ray status`, in its own process)."""
        out = subprocess.run(
            [ray_cli(), "status", f"--address={self.address}"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if out.returncode:
            return 0
        active = out.stdout.split("Active:", 1)[-1].split("Pending:", 1)[0]
        return sum(1 for line in active.splitlines() if "node_" in line)

    def wait_for_nodes(self, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.alive_nodes() == count:
                return
            time.sleep(0.5)
        raise TimeoutError(f"the Ray cluster did not reach {count} nodes in {timeout:.0f} s")

    def stop(self) -> None:
        for node in reversed(self.nodes):
            node.kill()
        self.nodes = []
        shutil.rmtree(self.ray_dir, ignore_errors=True)
        # `ray start --head` names this cluster in a machine-wide file; forget it if it is still ours
        latest = Path(tempfile.gettempdir(), "ray", "ray_current_cluster")
        try:
            if latest.read_text().strip() == self.address:
                latest.unlink()
        except OSError:
            pass
