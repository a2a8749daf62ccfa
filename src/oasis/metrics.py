"""The process's Prometheus metrics, recorded where things happen; `GET /metrics` adds the states it reads at
scrape time (models, engine queues, job queues). Labels are ids of configured models and route templates,
never request data, so their number stays bounded."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.process_collector import ProcessCollector

REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_JOB_BUCKETS = (0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600)

HTTP_REQUESTS = Counter(
    "oasis_http_requests",
    "HTTP requests answered, by route template and status.",
    ["method", "route", "status"],
    registry=REGISTRY,
)
HTTP_LATENCY = Histogram(
    "oasis_http_request_duration_seconds",
    "Time from a request's arrival to the end of its response (a stream's last byte).",
    ["method", "route"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
THROTTLED = Counter(
    "oasis_throttled_requests",
    "Requests refused with 429 because a model's queue was full (batch lines retried later count too).",
    ["model"],
    registry=REGISTRY,
)
TOKENS = Counter(
    "oasis_tokens",
    "Tokens read (prompt) and generated (completion) by the models served in this process.",
    ["model", "kind"],
    registry=REGISTRY,
)
TIME_TO_FIRST_TOKEN = Histogram(
    "oasis_time_to_first_token_seconds",
    "Time from queueing a generation to its first token.",
    ["model"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
JOB_DURATION = Histogram(
    "oasis_job_duration_seconds",
    "Background jobs run to an end, by kind (ingestion, batch) and outcome (completed, failed, …).",
    ["kind", "outcome"],
    buckets=_JOB_BUCKETS,
    registry=REGISTRY,
)


def observe_request(method: str, route: str, status: int, seconds: float) -> None:
    HTTP_REQUESTS.labels(method, route, str(status)).inc()
    HTTP_LATENCY.labels(method, route).observe(seconds)


def model_label(model: str) -> str:
    """The model as a label value: a fine-tune (`ft:BASE:PROJECT:SUFFIX:JOB`) counts under `ft:BASE`, so that
    metrics (open to scrapers) never name a project or its suffixes, and fine-tunes add no series of their own."""
    if model.startswith("ft:"):
        return "ft:" + model.split(":")[1]
    return model


def count_tokens(model: str, prompt_tokens: int, completion_tokens: int) -> None:
    label = model_label(model)
    TOKENS.labels(label, "prompt").inc(prompt_tokens)
    if completion_tokens:
        TOKENS.labels(label, "completion").inc(completion_tokens)
