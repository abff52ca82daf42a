"""acpd's daemon, as rooms: `engine/` (conversations), `agents/` (ACP agents as children),
`server/` (the front doors and `serve`), `cli/` (the `acpd` command; never imports trio), and
at the top what every room shares: `config`, `paths`, `logs`.

Deliberately empty: importing a light module (`daemon.paths`, the CLI) must not pull in trio
and the agent machinery.
"""
