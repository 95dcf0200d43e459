"""The ``avrs`` command. Subcommands live in their own modules and are added here."""

from __future__ import annotations

import importlib

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="dapsdk")
def cli() -> None:
    """dapsdk: dap_stream transport and AVReStream streaming cluster.

    Run `avrs COMMAND --help` for the options of each command.
    """


# (module, attribute) of each subcommand; a module that is missing is a packaging bug, so
# import errors are not hidden.
_SUBCOMMANDS = [
    ("dapsdk.cli.demo", "demo"),
    ("dapsdk.cli.bench", "bench"),
    ("dapsdk.cli.stream_server", "stream_server"),
    ("dapsdk.cli.cert", "cert"),
    ("dapsdk.cli.token", "token"),
    ("dapsdk.cli.node", "node"),
    ("dapsdk.cli.chat", "chat"),
    ("dapsdk.cli.poll", "poll"),
    ("dapsdk.cli.moderate", "moderate"),
    ("dapsdk.cli.cluster", "cluster"),
    ("dapsdk.cli.client", "status"),
    ("dapsdk.cli.media", "publish_cmd"),
    ("dapsdk.cli.media", "play_cmd"),
    ("dapsdk.cli.media", "vod"),
]


def _load_subcommands() -> None:
    for module_name, attr in _SUBCOMMANDS:
        module = importlib.import_module(module_name)
        cli.add_command(getattr(module, attr))


def main() -> None:
    _load_subcommands()
    cli()
