"""What every benchmark needs: the fake upstream, the two servers (project and floor), memory readings."""

from __future__ import annotations

import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.helpers import clean_env, upstream_env  # noqa: E402

PYTHON = sys.executable
BENCH = ROOT / "bench"
# Every process of a run compiles into, and reads from, one bytecode cache of its own. This machine sets
# PYTHONDONTWRITEBYTECODE=1, and the project's own __pycache__ goes stale as it is edited: each start would
# then compile the edited modules again, a cost an installed package never pays (and the floor would not).
PYCACHE = Path(tempfile.gettempdir()) / "onlysq-bench-pycache"


@dataclass(frozen=True)
class Target:
    """A server under test: how to launch it over stdio, and over streamable HTTP on a port."""

    name: str
    command: tuple[str, ...]
    http_args: tuple[str, ...]  # `{port}` is replaced

    def stdio(self, base_url: str, folder: Path, **env: str) -> Client:
        """A client that launches this server over stdio (initialize handshake); its stderr goes to a file."""
        params = StdioServerParameters(
            command=self.command[0],
            args=list(self.command[1:]),
            env=server_env(base_url, folder, **env),
            cwd=str(folder),
        )
        return Client(stdio_logged(params, folder / f"{self.name}-stdio.log"), mode="legacy")


@asynccontextmanager
async def stdio_logged(params: StdioServerParameters, log: Path) -> AsyncIterator[Any]:
    with log.open("a") as errlog:
        async with stdio_client(params, errlog=errlog) as streams:
            yield streams


PROJECT = Target(
    "project",
    (shutil.which("onlysq-mcp", path=str(Path(PYTHON).parent)) or "onlysq-mcp",),
    ("--transport", "http", "--port", "{port}"),
)
FLOOR = Target("floor", (PYTHON, str(BENCH / "floor_server.py")), ("--http", "{port}"))
TARGETS = (PROJECT, FLOOR)


def python_env(**env: str) -> dict[str, str]:
    """The environment of every Python process the benchmarks start (see PYCACHE)."""
    base = {k: v for k, v in clean_env().items() if k != "PYTHONDONTWRITEBYTECODE"}
    return base | {"PYTHONPYCACHEPREFIX": str(PYCACHE)} | env


def server_env(base_url: str, workdir: Path, **env: str) -> dict[str, str]:
    return python_env(**upstream_env(base_url, workdir / "images", **env))


def warm_bytecode() -> None:
    """Compile what the servers import into PYCACHE once, before anything is timed."""
    modules = "onlysq_mcp.cli, onlysq_mcp.server, onlysq_mcp.http_app, PIL.Image, PIL.PngImagePlugin, mcp, uvicorn"
    subprocess.run([PYTHON, "-c", f"import {modules}"], env=python_env(), check=True, cwd=BENCH)


@contextmanager
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="onlysq-bench-") as folder:
        yield Path(folder)


@contextmanager
def fake_upstream(*args: str) -> Iterator[str]:
    """`bench/fake.py` in its own process; yields its base URL."""
    process = subprocess.Popen([PYTHON, str(BENCH / "fake.py"), *args], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        base_url = process.stdout.readline().strip()
        if not base_url.startswith("http"):
            raise RuntimeError("the fake upstream did not start")
        yield base_url
    finally:
        stop(process)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def http_server(target: Target, base_url: str, folder: Path, **env: str) -> Iterator[tuple[str, int]]:
    """The target serving streamable HTTP; yields its /mcp URL and its process id."""
    port = free_port()
    args = [arg.replace("{port}", str(port)) for arg in target.http_args]
    log = (folder / f"{target.name}-{port}.log").open("wb")
    process = subprocess.Popen(
        [*target.command, *args], env=server_env(base_url, folder, **env), cwd=folder, stdout=log, stderr=log
    )
    try:
        wait_listening(process, port, f"{target.name} did not start serving HTTP; see {log.name}")
        yield f"http://127.0.0.1:{port}/mcp", process.pid
    finally:
        stop(process)
        log.close()


def wait_listening(process: subprocess.Popen, port: int, failure: str) -> None:
    """Until `process` accepts connections on `port`; RuntimeError(failure) if it exits or takes 30 s."""
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(failure)
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.02)


@contextmanager
def moto_server(folder: Path) -> Iterator[str]:
    """moto's standalone S3 (the `moto_server` script installed beside this Python) on a free port; yields its URL."""
    port = free_port()
    log = (folder / f"moto-{port}.log").open("wb")
    script = Path(PYTHON).parent / "moto_server"
    process = subprocess.Popen([str(script), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log)
    try:
        wait_listening(process, port, f"moto_server did not start; see {log.name}")
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(process)
        log.close()


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def child_pid(target: Target) -> int:
    """The process id of the stdio server this process launched (a direct child whose command matches)."""
    mine = os.getpid()
    wanted = Path(target.command[-1]).name.encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == mine and wanted in cmdline:
            return int(entry.name)
    raise RuntimeError(f"no child process runs {wanted.decode()}")


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS (now) and VmHWM (peak) of a process, in KiB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    return values


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def send_log(path: Path, path_filter: str, event: str) -> list[float]:
    """Times (time.monotonic) of one kind of event in the fake's `--send-log`, oldest first."""
    times = []
    for line in path.read_text().splitlines():
        stamp, where, kind = line.split()
        if where == path_filter and kind == event:
            times.append(float(stamp))
    return times


def median(values: list[float]) -> float:
    return statistics.median(values)


def machine() -> dict[str, str]:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        "unknown",
    )
    ram_kib = next(
        int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")
    )
    return {
        "CPUs (nproc)": str(len(os.sched_getaffinity(0))),
        "CPU model": model,
        "RAM": f"{ram_kib / 1024 / 1024:.1f} GiB",
        "Python": sys.version.split()[0],
    }
