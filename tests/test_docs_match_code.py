"""The docs promise what the code does, both ways: a config key or a cluster operation documented as
working is not refused by the code, and one the code refuses is documented as refused.

Both sides come from the code's own tables (the key declarations and ``NOT_SUPPORTED_YET`` of
``dapsdk.node.config``; the permission table of ``dapsdk.avrs.permissions`` and the request
handler tables of the services), and from the Markdown tables of docs/operations.md and
docs/avrs-protocol.md, never from lists written in this test."""

from __future__ import annotations

import configparser
import re
from pathlib import Path

from dapsdk.avrs.constants import AvrsChannel, ClusterOp
from dapsdk.avrs.permissions import PERMISSIONS
from dapsdk.node.config import NOT_SUPPORTED_MARK, NOT_SUPPORTED_YET, SECTIONS, reference_rows
from dapsdk.services import avrs_cluster, cluster_requests

DOCS = Path(__file__).resolve().parent.parent / "docs"


def _tables_after(text: str, heading: str) -> list[list[str]]:
    """Rows (cells) of the first Markdown table after the line starting with ``heading``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(heading))
    rows: list[list[str]] = []
    for line in lines[start + 1 :]:
        if line.startswith("|"):
            if set(line.strip()) <= set("|-: "):
                continue  # the separator row
            rows.append([cell.strip() for cell in line.strip().strip("|").split(" | ")])
        elif rows:
            break
    return rows[1:]  # without the header row


# ------------------------------------------------------------------ configuration keys


def _documented_keys() -> dict[tuple[str, str], str]:
    """``(section, key) -> meaning`` from the key reference of docs/operations.md."""
    text = (DOCS / "operations.md").read_text(encoding="utf-8")
    keys: dict[tuple[str, str], str] = {}
    for section in SECTIONS:
        for cells in _tables_after(text, f"### [{section}]"):
            keys[section, cells[0].strip("`")] = cells[-1]
    return keys


def test_every_key_is_documented_with_its_support() -> None:
    documented = _documented_keys()
    in_code = {(row[0], row[1]) for row in reference_rows()}
    assert set(documented) == in_code, "docs/operations.md key reference differs from the code"
    refused_in_docs = {key for key, meaning in documented.items() if NOT_SUPPORTED_MARK in meaning}
    assert refused_in_docs == set(NOT_SUPPORTED_YET), (
        "keys documented as refused must be exactly the keys the loader refuses"
    )


def test_no_documented_example_uses_a_refused_or_unknown_key() -> None:
    """Every INI example in the docs (documented as working) holds only keys the node acts on."""
    known = {(row[0], row[1]) for row in reference_rows()}
    for doc in ("operations.md", "avrs-protocol.md", "architecture.md"):
        text = (DOCS / doc).read_text(encoding="utf-8")
        for block in re.findall(r"```ini\n(.*?)```", text, flags=re.S):
            ini = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=("#", ";"))
            ini.read_string(block)
            for section in ini.sections():
                for key in ini[section]:
                    assert (section, key) in known, f"{doc}: [{section}] {key} is not a key"
                    assert (section, key) not in NOT_SUPPORTED_YET, (
                        f"{doc}: example uses [{section}] {key}, which the node refuses"
                    )


# ------------------------------------------------------------------ cluster operations


def _expand(names: str) -> list[str]:
    """``CONTENT_LIST_REQ / _RESP`` -> both names; ``ROUTE_ADD / DEL`` -> ROUTE_ADD, ROUTE_DEL."""
    parts = [p.strip() for p in re.sub(r"\*new\*", "", names).replace(",", "/").split("/")]
    parts = [p for p in parts if p]
    first = parts[0]
    out = [first]
    for part in parts[1:]:
        if part.startswith("_"):
            out.append(first.rsplit("_", 1)[0] + part)
        elif "_" not in part and "_" in first:
            out.append(first.rsplit("_", 1)[0] + "_" + part)
        else:
            out.append(part)
    return out


def _cluster_requests_in_code() -> tuple[set[str], set[str]]:
    """(every cluster request the permission table knows, those a node serves)."""
    requests = {ClusterOp(op).name for channel, op in PERMISSIONS if channel == AvrsChannel.CLUSTER}
    served = {ClusterOp(op).name for op in avrs_cluster._HANDLERS}
    served |= {ClusterOp(op).name for op in cluster_requests._HANDLERS}
    return requests, served


def test_cluster_operations_documented_as_the_node_serves_them() -> None:
    text = (DOCS / "avrs-protocol.md").read_text(encoding="utf-8")
    requests, served = _cluster_requests_in_code()
    not_served = requests - served

    op_rows = _tables_after(text, "**Cluster `'C'`**")
    documented: dict[str, str] = {}
    for cells in op_rows:
        for name in _expand(cells[1]):
            documented[name] = " ".join(cells[2:])
    missing = requests - set(documented)
    assert not missing, f"cluster requests missing from avrs-protocol.md §4: {sorted(missing)}"
    unknown = set(documented) - {op.name for op in ClusterOp}
    assert not unknown, f"avrs-protocol.md §4 documents unknown cluster ops {sorted(unknown)}"
    marked = {name for name, notes in documented.items() if "not served" in notes.lower()}
    assert marked & requests == not_served, (
        f"documented as not served: {sorted(marked)}; refused by the code: {sorted(not_served)}"
    )

    serves_rows = _tables_after(text, "**What a node serves**")
    said_served = {name for cells in serves_rows for name in _expand(cells[0])}
    assert said_served, "the 'What a node serves' table was not found"
    wrongly = said_served - served
    assert not wrongly, f"documented as served but refused by the code: {sorted(wrongly)}"
