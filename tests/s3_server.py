"""A real S3-compatible server for the tests: moto's standalone server (`moto_server`) in a subprocess on a free
port of 127.0.0.1, offline, state in memory, plus plain-HTTP helpers to look into it.

A subprocess, not moto's in-process `mock_aws`: the code under test talks S3 through obstore (Rust, its own HTTP
client), which a Python-level mock cannot intercept, and the servers under test run as subprocesses too.

moto checks no SigV4 signature, so the helpers below use plain HTTP (with an Authorization header of the right
shape, see AUTHORIZATION); requests with any access key land in the same default account, so what obstore
writes, they read.
Bucket names follow S3's rules (3-63 characters, lower case): moto answers 400 InvalidBucketName otherwise.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import functools
import os
import signal
import subprocess
import sys
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import httpx2

from tests.helpers import free_port

S3_NAMESPACE = "{http://s3.amazonaws.com/doc/2006-03-01/}"
ACCESS_KEY_ID = "AKIAMOTOBUCKETKEYID1"
SECRET_ACCESS_KEY = "test-secret-key"
REGION = "us-east-1"
START_TIMEOUT = 30.0  # moto imports take ~0.5-2 s; a loaded 2-core machine needs headroom


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL it when the test process dies, even by SIGKILL (Linux prctl
    PR_SET_PDEATHSIG = 1), so no moto server outlives a crashed or killed test session."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)


# moto serves a private object only to a request that carries an Authorization header (anonymous GETs get 403,
# moto/s3/responses.py `_key_response`), and checks no signature, so an unsigned one of the right shape will do.
AUTHORIZATION = (
    f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY_ID}/20250101/{REGION}/s3/aws4_request, "
    "SignedHeaders=host, Signature=unchecked"
)


def _client() -> httpx2.Client:
    # trust_env=False: a developer's HTTP(S)_PROXY must not catch requests to 127.0.0.1.
    return httpx2.Client(timeout=10, trust_env=False, headers={"authorization": AUTHORIZATION})


@contextmanager
def moto_server(log: Path | None = None) -> Iterator[str]:
    """Run moto's S3 server on a free port of 127.0.0.1 until the block ends; yields its endpoint URL.

    Its output goes to `log` (or nowhere), never to the pytest pipe. It runs in its own process group, which
    is killed at the end; the parent-death signal covers a test process that dies without running this.
    That signal follows the *thread* that started it (Linux semantics): start it from a thread that lives as
    long as the server should (the main thread, as session fixtures do), never from a short-lived worker thread.
    """
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    # `-m moto.server` is what the `moto_server` console script runs, wherever scripts were installed.
    command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    with contextlib.ExitStack() as stack:
        output = stack.enter_context(log.open("wb")) if log else subprocess.DEVNULL
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=output,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        kill = functools.partial(_kill_group, process)
        stack.callback(kill)
        # For an interpreter that exits without unwinding this block (os._exit aside); unregistered after.
        atexit.register(kill)
        stack.callback(atexit.unregister, kill)
        _wait_until_answering(process, endpoint, log)
        yield endpoint


def _wait_until_answering(process: subprocess.Popen[bytes], endpoint: str, log: Path | None) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    with _client() as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"moto_server exited with {process.returncode}:\n{_tail(log)}")
            with contextlib.suppress(httpx2.TransportError):
                client.get(endpoint + "/")  # ListBuckets: any answer means it serves
                return
            time.sleep(0.05)
    raise RuntimeError(f"moto_server did not answer within {START_TIMEOUT} s:\n{_tail(log)}")


def _tail(log: Path | None) -> str:
    return log.read_text(errors="replace")[-4000:] if log and log.exists() else "(no log)"


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # in-memory state only: nothing to shut down cleanly
    process.wait(timeout=10)


# --- looking into the server over plain HTTP -------------------------------------------------------------


def unique_bucket_name() -> str:
    return f"test-{uuid.uuid4().hex[:20]}"


def create_bucket(endpoint: str, name: str) -> None:
    """CreateBucket (PUT /{name}); us-east-1 needs no LocationConstraint body."""
    with _client() as client:
        client.put(f"{endpoint}/{name}", content=b"").raise_for_status()


def list_keys(endpoint: str, bucket: str, prefix: str = "") -> list[str]:
    """Every key under `prefix`, sorted (ListObjectsV2, following continuation tokens)."""
    keys: list[str] = []
    params = {"list-type": "2", "prefix": prefix}
    with _client() as client:
        while True:
            response = client.get(f"{endpoint}/{bucket}", params=params)
            response.raise_for_status()
            root = ET.fromstring(response.content)
            keys += [node.text or "" for node in root.iter(f"{S3_NAMESPACE}Key")]
            token = root.findtext(f"{S3_NAMESPACE}NextContinuationToken")
            if root.findtext(f"{S3_NAMESPACE}IsTruncated") != "true" or not token:
                return sorted(keys)
            params["continuation-token"] = token


def get_object(endpoint: str, bucket: str, key: str) -> bytes:
    """The object's bytes (GetObject); raises httpx2.HTTPStatusError (404) when it is not there."""
    with _client() as client:
        response = client.get(f"{endpoint}/{bucket}/{quote(key, safe='/')}")
        response.raise_for_status()
        return response.content


def s3_env(endpoint: str, bucket: str, prefix: str) -> dict[str, str]:
    """The environment that points a server at `s3://{bucket}/{prefix}` on this endpoint."""
    return {
        "ONLYSQ_MCP_STORAGE_URL": f"s3://{bucket}/{prefix}",
        "ONLYSQ_MCP_S3_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
        "AWS_REGION": REGION,
    }
