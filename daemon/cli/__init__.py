"""The `acpd` command line: a client of the daemon's socket that never imports trio.

`commands` is the parser and every command, `client` the blocking JSON-RPC client, `chat` the
interactive and streaming commands, `render` what people read, `install` the systemd units.
"""

from daemon.cli.commands import main as main
