"""acpd's daemon: every task (engine, agent peers, front-ends), the CLI and the demo agent.

Deliberately empty: importing a light module (`daemon.paths`, the CLI's helpers) must not pull
in trio and the agent machinery. Import from the modules: `daemon.agent`, `daemon.peer`, ...
"""
