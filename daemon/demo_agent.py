"""`python -m daemon.demo_agent`: the demo agent's old name (`daemon.agents.demo`).

Kept because conversations store their agent's command: those created before the move still
start with it.
"""

import runpy

if __name__ == "__main__":
    runpy.run_module("daemon.agents.demo", run_name="__main__", alter_sys=True)
