"""Prometheus metrics of the process. Labels carry no personal data and no unbounded ids."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

HTTP_REQUEST_SECONDS = Histogram(
    "derbridge_http_request_seconds",
    "Time to answer an API request.",
    ["system", "method", "route", "status"],
)

CIS_ROWS = Counter(
    "derbridge_cis_import_rows_total",
    "CIS extract rows handled by imports, by system and result.",
    ["system", "result"],
)

BRIDGE_RECEIVED = Counter("derbridge_bridge_received_total", "Messages the bridge saw for the first time.", ["flow"])
BRIDGE_DELIVERED = Counter("derbridge_bridge_delivered_total", "Messages delivered to their target.", ["flow"])
BRIDGE_RETRIED = Counter("derbridge_bridge_retried_total", "Delivery attempts that will be retried.", ["flow"])
BRIDGE_PARKED = Counter("derbridge_bridge_parked_total", "Messages parked for a missing prerequisite.", ["flow"])
BRIDGE_DEAD = Counter("derbridge_bridge_dead_total", "Messages dead-lettered.", ["flow"])
BRIDGE_LATENCY = Histogram(
    "derbridge_bridge_end_to_end_seconds",
    "From a message's occurred_at to its delivery.",
    ["flow"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
)
BRIDGE_QUEUE_DEPTH = Gauge("derbridge_bridge_queue_depth", "Messages waiting in a flow's queue.", ["flow"])
OUTBOX_PUBLISHED = Counter("derbridge_outbox_published_total", "Outbox rows published by the relay.", ["system"])

# Periodic jobs (infra/jobs.py). A job is late when time() - last success > 3 * interval + 60 s: the alert
# rule shipped for operators, and the same limit /readyz applies. The last success is the latest completion
# this process knows of, its own or another process's (read from the lease table each round), so every
# replica reports the cluster's view and only a job that runs nowhere is late everywhere.
JOB_LAST_SUCCESS = Gauge(
    "derbridge_job_last_success_timestamp_seconds",
    "Unix time of the job's last successful run (in this process or another, from its lease row).",
    ["system", "job"],
)
JOB_INTERVAL = Gauge("derbridge_job_interval_seconds", "How often the job is meant to run.", ["system", "job"])
JOB_FAILURES = Counter(
    "derbridge_job_failures_total",
    "Turns of a job that failed in this process: the job raised, or its lease could not be taken or released "
    "(the database did not answer).",
    ["system", "job"],
)
EDGE_AUTH_FAILURES = Counter(
    "derbridge_edge_auth_failures_total",
    "Refused edge credentials and tokens, by reason: bad_credentials (token request), expired, invalid (a bad "
    "signature: e.g. replicas not sharing edge.token_secret), revoked, malformed, rate_limited (429: over a "
    "rate limit on credentials).",
    ["reason"],
)
