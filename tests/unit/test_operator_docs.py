"""The operators' pages say what the code does: the metrics table is the one
made from the metrics, every event field and every metric a page names
exists. Pure tests: no sshd, no Jupyter server."""

from __future__ import annotations

import json
import re

import yaml

from jupyter_sshd_proxy import audit
from jupyter_sshd_proxy.metrics import exposed_names, metrics_table_markdown

from ..support.helpers import REPO

DOCS = REPO / "docs"
PAGES = {path.name: path.read_text() for path in sorted(DOCS.glob("*.md"))}
# Any jupyter_sshd_proxy_* word but the client's package, jupyter_sshd_proxy_client.
METRIC_NAME = re.compile(r"\bjupyter_sshd_proxy_(?!client\b)[a-z_]+[a-z]")


def schema(name: str) -> dict:
    with open(f"{audit.SCHEMA_DIR}/{name}.yaml") as stream:
        return yaml.safe_load(stream)


def test_the_metrics_table_is_the_one_made_from_the_metrics():
    table = re.search(
        r"<!-- metrics-table:[^\n]*-->\n(.*?)<!-- end metrics-table -->",
        PAGES["monitoring.md"],
        re.DOTALL,
    )
    assert table, "docs/monitoring.md lost its metrics table markers"
    assert table.group(1) == metrics_table_markdown(), (
        "the metrics changed: paste metrics_table_markdown() into docs/monitoring.md"
    )


def test_every_metric_named_on_a_page_exists():
    names = set(exposed_names())
    seen = set()
    for page, text in PAGES.items():
        for found in METRIC_NAME.findall(text):
            assert found in names, f"{page}: no metric {found}"
            seen.add(found)
    assert names <= seen, f"metrics no page names: {names - seen}"


def test_every_event_field_and_reason_is_described():
    text = PAGES["monitoring.md"]
    for name, schema_id in audit.SCHEMAS.items():
        definition = schema(name)
        assert definition["$id"] == schema_id
        assert f"`{schema_id}`" in text, schema_id
        for field in definition["properties"]:
            assert f"`{field}`" in text, f"docs/monitoring.md does not describe {name}.{field}"
    for reason in schema("refused")["properties"]["reason"]["enum"]:
        assert f"`{reason}`" in text, reason


def test_the_example_event_is_a_valid_event():
    from jupyter_events.schema import EventSchema

    line = next(
        line for line in PAGES["monitoring.md"].splitlines() if line.startswith('{"__timestamp__"')
    )
    event = json.loads(line)
    name = event["__schema__"].split("/")[-2]
    EventSchema(schema(name)).validate({k: v for k, v in event.items() if not k.startswith("__")})


def yaml_blocks(page: str) -> list:
    return [
        yaml.safe_load(block) for block in re.findall(r"```yaml\n(.*?)```", PAGES[page], re.DOTALL)
    ]


def z2jh_values() -> dict:
    return next(block for block in yaml_blocks("zero-to-jupyterhub.md") if "singleuser" in block)


def test_every_variable_of_the_values_is_a_setting_that_takes_its_value(monkeypatch):
    from jupyter_sshd_proxy.settings import SSHDProxy, env_name

    variables = {env_name(name) for name in SSHDProxy.class_traits(config=True)}
    for name in variables:
        monkeypatch.delenv(name, raising=False)
    singleuser = z2jh_values()["singleuser"]
    base = {k: v for k, v in singleuser["extraEnv"].items() if k.startswith("JUPYTER_SSHD_PROXY")}
    assert base
    profiles = singleuser["profileList"]
    policies = set()
    for profile in [{}, *profiles]:  # the extraEnv alone, then each profile's merge
        environment = {
            **base,
            **profile.get("kubespawner_override", {}).get("environment", {}),
        }
        for name, value in environment.items():
            assert name in variables, f"no setting reads {name}"
            monkeypatch.setenv(name, str(value))
        settings = SSHDProxy()
        policies.add(settings.policy)
        for name, value in environment.items():
            trait = name[len("JUPYTER_SSHD_PROXY_") :].lower()
            assert str(getattr(settings, trait)) == str(value)
    assert policies == {"off", "all", "sftp-only", "no-forwarding"}


def test_the_hub_settings_of_the_values_exist():
    from jupyterhub.app import JupyterHub

    values = z2jh_values()
    traits = JupyterHub.class_traits(config=True)
    for name in values["hub"]["config"]["JupyterHub"]:
        assert name in traits, f"c.JupyterHub.{name} is not a setting"
    role = values["hub"]["loadRoles"]["prometheus-ssh"]
    assert role["services"] == list(values["hub"]["services"])
    assert role["scopes"] == ["access:servers"]


def test_the_event_handler_file_of_the_values_routes_the_events():
    import logging

    from traitlets.config import Config

    files = z2jh_values()["singleuser"]["extraFiles"]
    (mounted,) = files.values()
    assert mounted["mountPath"].startswith("/usr/local/etc/jupyter/")  # a system config dir
    c = Config()
    exec(compile(mounted["stringData"], "jupyter_server_config.py", "exec"), {"c": c})
    (handler,) = c.EventLogger.handlers
    assert isinstance(handler, logging.StreamHandler)


def test_the_scrape_config_and_the_alert_rules_name_our_metrics():
    blocks = yaml_blocks("zero-to-jupyterhub.md")
    scrape = next(b for b in blocks if "scrape_configs" in b)["scrape_configs"][0]
    relabels = scrape["relabel_configs"]
    assert any(r.get("target_label") == "__metrics_path__" for r in relabels)
    assert "/user/${1}/metrics" in [r.get("replacement") for r in relabels]
    rules = next(b for b in blocks if "groups" in b)["groups"][0]["rules"]
    names = set(exposed_names())
    assert rules
    for rule in rules:
        found = METRIC_NAME.findall(rule["expr"])
        assert found, rule["alert"]
        assert set(found) <= names, rule["alert"]
