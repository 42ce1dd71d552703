"""Prometheus metrics of the process. Labels carry no personal data and no unbounded ids."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

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
