"""`python -m daemon.server serve ...`: the daemon without the CLI."""

import sys

from daemon.server.serve import main

sys.exit(main())
