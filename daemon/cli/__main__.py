"""`python -m daemon.cli`: the `acpd` command from a checkout (the systemd unit uses it there)."""

import sys

from daemon.cli.commands import main

sys.exit(main())
