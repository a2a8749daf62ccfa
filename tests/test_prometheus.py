"""The real Prometheus server (Debian's `prometheus`) scrapes a running `oasis serve` on loopback, and a query
sees a counter that requests moved."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import httpx

from tests.server_process import free_port, oasis_env, oasis_server

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"


def test_prometheus_scrapes_the_request_counter(tmp_path: Path) -> None:
    assert Path(PROMETHEUS).exists(), "Debian's prometheus package is needed (scripts/check.sh installs it)"
    config = tmp_path / "oasis.yaml"
    config.write_text("defaults: false\nserver: {metrics_token: scrape-me}\n")
    with oasis_server(tmp_path / "data", oasis_env(None), "--config", str(config)) as server:
        target = server.base_url.removeprefix("http://")
        (tmp_path / "prometheus.yml").write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n"
            "  - job_name: oasis\n"
            "    authorization: {credentials: scrape-me}\n"
            f"    static_configs: [{{targets: ['{target}']}}]\n"
        )
        web = f"127.0.0.1:{free_port()}"
        prometheus = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address={web}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=(tmp_path / "prometheus.log").open("w"),
        )
        try:
            for _ in range(3):
                assert httpx.get(f"{server.base_url}/v1/models").status_code == 200
            query = 'sum(oasis_http_requests_total{route="/v1/models",status="200"})'
            seen = 0.0
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    answer = httpx.get(f"http://{web}/api/v1/query", params={"query": query}, timeout=5).json()
                    results = answer["data"]["result"]
                    seen = float(results[0]["value"][1]) if results else 0.0
                except (httpx.TransportError, KeyError, ValueError):
                    pass
                if seen >= 3:
                    break
                time.sleep(0.5)
            assert seen >= 3, (tmp_path / "prometheus.log").read_text()[-2000:]
            targets = httpx.get(f"http://{web}/api/v1/targets").json()["data"]["activeTargets"]
            assert [target["health"] for target in targets] == ["up"]
        finally:
            prometheus.terminate()
            prometheus.wait(timeout=30)
