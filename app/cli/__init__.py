"""The `zerodata` command. Each module here owns one group of subcommands and imports its
heavy dependencies (torch, FastAPI, ...) inside the command, so `zerodata --help` stays fast."""
from __future__ import annotations

import click

from app.cli import client_commands, engine_commands, kernel_commands, service_commands


@click.group()
@click.version_option(package_name="zerodata")
def main() -> None:
    """zerodata: data-free model compression with compiled sparse kernels."""


for module in (engine_commands, kernel_commands, service_commands, client_commands):
    for command in module.COMMANDS:
        main.add_command(command)
