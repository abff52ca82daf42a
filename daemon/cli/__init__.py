"""The `acpd` command line: a client of the daemon's socket that never imports trio.

`commands` is `main` and what a command runs with (`Ctx`), `parsing` the parser; the commands
live in `service` (the daemon), `conversations`, `messages` and `asking`. `client` is the
blocking JSON-RPC client, `chat` the interactive and streaming loops, `render` what people
read, `install` the systemd units.
"""

from daemon.cli.commands import main as main
