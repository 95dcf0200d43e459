"""``avrs chat``: send chat lines to the members of a content and print what they say."""

from __future__ import annotations

from pathlib import Path

import click

from .interactive_client import connection_options, execute, interactive_session, print_pushes


@click.command("chat")
@click.argument("content")
@connection_options
@click.option("--say", "lines", multiple=True, help="A line to send (repeatable).")
@click.option(
    "--listen",
    "seconds",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Seconds to keep printing the chat after sending (0: print the history and exit).",
)
def chat(
    content: str,
    config_path: Path,
    token_file: Path | None,
    target: str | None,
    lines: tuple[str, ...],
    seconds: float,
) -> None:
    """Chat in CONTENT: prints the recent history, sends each --say line (signed), then prints
    new lines, polls and moderation for --listen seconds."""

    async def main() -> None:
        async with interactive_session(config_path, token_file, target, content) as session:
            for line in lines:
                message_id = await session.client.chat(session.cluster_id, session.content_id, line)
                click.echo(f"sent #{message_id}")
            await print_pushes(session, seconds)

    execute(main())
