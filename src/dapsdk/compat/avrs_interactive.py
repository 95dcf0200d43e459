"""The seed's third scenario, interactive broadcasting::

    avrs_interactive_config_t interactive_config = {
        .allow_chat = true, .allow_polls = true, .moderation = true };
    avrs_broadcast_t *broadcast = avrs_create_interactive_broadcast(
        "debate_session", &interactive_config);

On the node ``avrs_plugin_init`` started: declares the content ``name`` (owned by the node, flows
"av") with those interactive features, so members who attach it chat, vote and are moderated
(docs/avrs-protocol.md §13). Returns None (with the reason logged) when there is no node, the node
is not a host or server, or the name is taken by another owner.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

from ..avrs.directory import ContentInfo
from ..avrs.signing import identity_of
from ..services.avrs_cluster import content_guuid
from ..services.interactive import Features
from .avrs import _plugin

log = logging.getLogger("dapsdk.compat")


@dataclass(slots=True)
class avrs_interactive_config_t:
    allow_chat: bool = True
    allow_polls: bool = True
    moderation: bool = True


@dataclass(frozen=True, slots=True)
class avrs_broadcast_t:
    name: str
    content_id: bytes
    """The content's 16-byte wire id (``content_guuid(name)``)."""
    cluster_id: bytes
    config: avrs_interactive_config_t


def avrs_create_interactive_broadcast(
    name: str, config: avrs_interactive_config_t | None = None
) -> avrs_broadcast_t | None:
    cfg = config if config is not None else avrs_interactive_config_t()
    try:
        loop, node = _plugin()
    except RuntimeError as exc:
        log.error("avrs_create_interactive_broadcast: %s", exc)
        return None
    try:
        content_id = content_guuid(name)
    except ValueError as exc:
        log.error("avrs_create_interactive_broadcast: %s", exc)
        return None
    owner = identity_of(node.identity.public_key)
    features = Features(cfg.allow_chat, cfg.allow_polls, cfg.moderation)

    def declare() -> str | None:
        directory = node.directory
        existing = directory.info.contents.get(content_id)
        if existing is not None and existing.owner != owner:
            return f"content {name!r} belongs to another member"
        if existing is not None:
            directory.put_content(replace(existing, interactive=features.bits, name=name))
        else:
            directory.put_content(
                ContentInfo(content_id, owner, "av", (), name, name=name, interactive=features.bits)
            )
        return None

    problem = loop.call(declare)
    if problem is not None:
        log.error("avrs_create_interactive_broadcast: %s", problem)
        return None
    return avrs_broadcast_t(name, content_id, node.directory.cluster_id, cfg)
