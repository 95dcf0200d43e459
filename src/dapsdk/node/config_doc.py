"""The configuration key reference of docs/operations.md, generated from the declarations in
:mod:`.config` (``python -m dapsdk.node.config_doc`` prints it)."""

from __future__ import annotations

from .config import SECTIONS, reference_rows


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render_reference() -> str:
    """One Markdown table per section: key, type, default, allowed values, meaning."""
    out: list[str] = []
    rows = list(reference_rows())
    for section in SECTIONS:
        out += [
            f"### [{section}]",
            "",
            "| key | type | default | allowed | meaning |",
            "|---|---|---|---|---|",
        ]
        for row_section, key, type_name, default, allowed, meaning in rows:
            if row_section == section:
                shown = f"`{default}`" if default else "—"
                out.append(
                    f"| `{key}` | {type_name} | {shown} | {_cell(allowed)} | {_cell(meaning)} |"
                )
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    print(render_reference())
