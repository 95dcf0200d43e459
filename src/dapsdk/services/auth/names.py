"""How AVRS facts are written into X.509 certificates (one place, read by issue and verify).

Choice (documented in docs/operations.md): standard fields and Subject Alternative Name URIs rather
than a private extension, because ``openssl x509 -text`` and every other X.509 tool print SAN URIs
as text, while a private OID would show as opaque hex.

* CA certificate: subject ``CN=AVRS cluster CA, O=<cluster_id>``.
* Node certificate: subject ``CN=<node address>, O=<cluster_id>``, and SAN URIs
  ``avrs:node=XXXX::XXXX::XXXX::XXXX`` and ``avrs:roles=0x0100`` (the u16 role bitmask in hex).
"""

from __future__ import annotations

from typing import Final

from cryptography import x509
from cryptography.x509.oid import NameOID

from dapsdk.stream.identity import NodeAddress

from .roles import Role, roles_from_int

CA_COMMON_NAME: Final = "AVRS cluster CA"
URI_NODE_PREFIX: Final = "avrs:node="
URI_ROLES_PREFIX: Final = "avrs:roles="


def ca_subject(cluster_id: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, CA_COMMON_NAME),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, cluster_id),
        ]
    )


def node_subject(address: NodeAddress, cluster_id: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, str(address)),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, cluster_id),
        ]
    )


def node_uris(address: NodeAddress, roles: Role) -> list[x509.GeneralName]:
    return [
        x509.UniformResourceIdentifier(f"{URI_NODE_PREFIX}{address}"),
        x509.UniformResourceIdentifier(f"{URI_ROLES_PREFIX}0x{int(roles):04x}"),
    ]


def cluster_of(name: x509.Name) -> str | None:
    """The cluster id (the ``O`` attribute) of a subject or issuer name."""
    attrs = name.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    if not attrs:
        return None
    value = attrs[0].value
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def parse_node_uris(cert: x509.Certificate) -> tuple[NodeAddress | None, Role]:
    """The node address and roles in a certificate's SAN URIs; ``ValueError`` if garbled."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None, Role.NONE
    address: NodeAddress | None = None
    roles = Role.NONE
    for uri in san.get_values_for_type(x509.UniformResourceIdentifier):
        if uri.startswith(URI_NODE_PREFIX):
            if address is not None:
                raise ValueError("more than one avrs:node URI")
            address = NodeAddress.parse(uri[len(URI_NODE_PREFIX) :])
        elif uri.startswith(URI_ROLES_PREFIX):
            text = uri[len(URI_ROLES_PREFIX) :]
            try:
                roles |= roles_from_int(int(text, 16))
            except ValueError:
                raise ValueError(f"avrs:roles value {text!r} is not a hex u16") from None
    return address, roles
