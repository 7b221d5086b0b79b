"""The operators' pages say what the code does: the metrics table is the one
made from the metrics, every event field and every metric a page names
exists. Pure tests: no sshd, no Jupyter server."""

from __future__ import annotations

import json
import re

import yaml

from jupyter_sshd_proxy import audit
from jupyter_sshd_proxy.metrics import exposed_names, metrics_table_markdown

from .helpers import REPO

DOCS = REPO / "docs"
PAGES = {path.name: path.read_text() for path in sorted(DOCS.glob("*.md"))}
METRIC_NAME = re.compile(r"\bjupyter_sshd_proxy_[a-z_]+[a-z]")


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
