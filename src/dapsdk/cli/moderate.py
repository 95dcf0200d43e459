"""``avrs moderate``: delete a chat message, mute, ban, slow mode (host, operator, owner)."""

from __future__ import annotations

from pathlib import Path

import click

from ..services.interactive import ModAction
from .interactive_client import connection_options, execute, interactive_session

_ACTIONS = {
    "delete": ModAction.DELETE_MESSAGE,
    "mute": ModAction.MUTE,
    "unmute": ModAction.UNMUTE,
    "ban": ModAction.BAN,
    "unban": ModAction.UNBAN,
    "slow": ModAction.SLOW_MODE,
}


@click.command("moderate")
@click.argument("action", type=click.Choice(sorted(_ACTIONS)))
@click.argument("content")
@connection_options
@click.option("--member", default=None, help="Identity (64 hex digits) to mute, ban, ...")
@click.option("--message", "message_id", type=int, default=None, help="Message id to delete.")
@click.option(
    "--duration", type=int, default=None, help="Seconds (mute: 0 = until unmuted; slow: 0 = off)."
)
@click.option(
    "--totp", default=None, help="TOTP code (hosts and operators moderating by role need it)."
)
def moderate(
    action: str,
    content: str,
    config_path: Path,
    token_file: Path | None,
    target: str | None,
    member: str | None,
    message_id: int | None,
    duration: int | None,
    totp: str | None,
) -> None:
    """Moderate CONTENT: delete (--message), mute/unmute/ban/unban (--member), slow
    (--duration)."""
    try:
        target_member = bytes.fromhex(member) if member else None
    except ValueError:
        raise click.BadParameter("64 hex digits", param_hint="--member") from None
    if target_member is not None and len(target_member) != 32:
        raise click.BadParameter("64 hex digits", param_hint="--member")

    async def main() -> None:
        async with interactive_session(config_path, token_file, target, content) as s:
            await s.client.moderate(
                s.cluster_id,
                s.content_id,
                _ACTIONS[action],
                member=target_member,
                message_id=message_id,
                duration=duration,
                totp=totp,
            )
            click.echo(f"{action}: done")

    execute(main())
