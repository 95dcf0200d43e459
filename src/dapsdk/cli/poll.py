"""``avrs poll``: create, vote in and close polls of a content; results are pushed to members."""

from __future__ import annotations

from pathlib import Path

import click

from .interactive_client import connection_options, execute, interactive_session, print_pushes

_listen = click.option(
    "--listen",
    "seconds",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Seconds to keep printing poll updates afterwards.",
)


@click.group("poll")
def poll() -> None:
    """Polls in a content (create and close: host, operator or the content's owner)."""


@poll.command("create")
@click.argument("content")
@click.argument("question")
@click.argument("options", nargs=-1, required=True)
@connection_options
@_listen
def create(
    content: str,
    question: str,
    options: tuple[str, ...],
    config_path: Path,
    token_file: Path | None,
    target: str | None,
    seconds: float,
) -> None:
    """Open a poll: QUESTION with 2..10 OPTIONS."""

    async def main() -> None:
        async with interactive_session(config_path, token_file, target, content) as s:
            poll_id = await s.client.create_poll(s.cluster_id, s.content_id, question, options)
            click.echo(f"poll #{poll_id}")
            await print_pushes(s, seconds)

    execute(main())


@poll.command("vote")
@click.argument("content")
@click.argument("poll_id", type=int)
@click.argument("choice", type=int)
@connection_options
@_listen
def vote(
    content: str,
    poll_id: int,
    choice: int,
    config_path: Path,
    token_file: Path | None,
    target: str | None,
    seconds: float,
) -> None:
    """Vote CHOICE (0-based option index) in POLL_ID; one vote per identity."""

    async def main() -> None:
        async with interactive_session(config_path, token_file, target, content) as s:
            await s.client.vote(s.cluster_id, s.content_id, poll_id, choice)
            click.echo(f"voted {choice} in poll #{poll_id}")
            await print_pushes(s, seconds)

    execute(main())


@poll.command("close")
@click.argument("content")
@click.argument("poll_id", type=int)
@connection_options
def close(
    content: str, poll_id: int, config_path: Path, token_file: Path | None, target: str | None
) -> None:
    """Close POLL_ID; the final results are pushed to every member and printed."""

    async def main() -> None:
        async with interactive_session(config_path, token_file, target, content) as s:
            await s.client.close_poll(s.cluster_id, s.content_id, poll_id)
            await print_pushes(s, 1.0)

    execute(main())
