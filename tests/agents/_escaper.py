"""An ACP agent that leaves a process behind the way hostile or sloppy agents do.

`python tests/agents/_escaper.py PIDFILE [--double-fork] [--scrub-env]`: before running the
demo agent, it forks a grandchild-to-be that calls setsid() (leaving the agent's process group
and session), ignores SIGTERM and sleeps forever; it writes its pid to PIDFILE once it is set
up. `--double-fork`: the intermediate process exits at once, so the grandchild is orphaned
while the agent still runs (re-parented to the nearest subreaper, or init). `--scrub-env`: the
grandchild replaces its environment (execs with an empty one), so the agent's marker is gone
too; only a cgroup still holds it.
"""

from __future__ import annotations

import os
import runpy
import signal
import sys

# The grandchild, after its exec: say who it is (atomically), then wait forever.
_SLEEPER = """
import os, sys, time
path = sys.argv[1]
with open(path + ".tmp", "w") as f:
    f.write(str(os.getpid()))
os.replace(path + ".tmp", path)
while True:
    time.sleep(3600)
"""


def main() -> None:
    pidfile = sys.argv[1]
    double, scrub = "--double-fork" in sys.argv, "--scrub-env" in sys.argv
    if os.fork() == 0:
        if double and os.fork() != 0:
            os._exit(0)
        os.setsid()
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # stays ignored across the exec
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1):  # keep stderr: a leftover holding a pipe is part of the trouble
            os.dup2(devnull, fd)
        env = {} if scrub else dict(os.environ)
        os.execve(sys.executable, [sys.executable, "-c", _SLEEPER, pidfile], env)
    if double:
        os.wait()  # the intermediate, which exits at once
    runpy.run_module("daemon.agents.demo", run_name="__main__")


if __name__ == "__main__":
    main()
