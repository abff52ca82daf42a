"""The README and the program agree: its command table against the parser, the agents'
environment against the allow-list, the help texts against what the commands take."""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from daemon.agents.environment import ENV_NAMES, ENV_PREFIXES, allowlist_words
from daemon.cli import commands as cli
from daemon.cli.install import render_service
from daemon.cli.parsing import CLIENT_NOTE, IDS_NOTE

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
_COMMON = {"--socket", "--json", "--help", "-h"}  # every client command's, said once above it


def _section(title: str) -> str:
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end > 0 else None]


def _table_synopses() -> dict[str, str]:
    """command -> its synopsis, from the first column of the command-line table."""
    out = {}
    for line in _section("The command line").splitlines():
        found = re.match(r"\| `(acpd [^`]*)` \|", line)
        if found:
            synopsis = found.group(1).replace("\\|", "|")
            out[synopsis.split()[1]] = synopsis
    return out


def _parse_synopsis(synopsis: str) -> tuple[dict[str, str | None], set[str]]:
    """({option: metavar or None}, {positional}) of `acpd CMD [--opt META] ID TEXT…`."""
    words = [w.strip("[]()") for w in shlex.split(synopsis.replace("|", " ").replace("…", ""))]
    words = [w for w in words[2:] if w]
    options: dict[str, str | None] = {}
    positionals: set[str] = set()
    i = 0
    while i < len(words):
        word = words[i]
        if word.startswith("--"):
            nxt = words[i + 1] if i + 1 < len(words) else ""
            takes = bool(nxt) and not nxt.startswith("--") and (nxt.isupper() or " " in nxt)
            options[word] = nxt if takes else None
            i += 2 if takes else 1
        else:
            positionals.add(word)
            i += 1
    return options, positionals


def _subparser(name: str) -> argparse.ArgumentParser:
    parser = cli.build_parser(name)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    choice: argparse.ArgumentParser = sub.choices[name]
    return choice


def _parser_arguments(name: str) -> tuple[dict[str, str | None], set[str]]:
    options: dict[str, str | None] = {}
    positionals: set[str] = set()
    for action in _subparser(name)._actions:
        if not action.option_strings:
            positionals.add(str(action.metavar or action.dest.upper()))
            continue
        flag = max(action.option_strings, key=len)
        if (flag in _COMMON and cli.COMMANDS[name].client) or flag in ("--help", "-h"):
            continue
        takes = action.nargs != 0
        meta = action.metavar or action.dest.upper()
        meta = " ".join(meta) if isinstance(meta, tuple) else meta  # nargs=2: `--edit N TEXT`
        metavar = str(meta).strip("'").replace("…", "")
        options[flag] = metavar if takes else None  # as the synopsis shows it, unquoted
    return options, {p.rstrip("…") for p in positionals}


def test_the_table_lists_every_command_once() -> None:
    assert sorted(_table_synopses()) == sorted(cli.COMMANDS)


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_the_table_has_each_commands_options_and_arguments(name: str) -> None:
    assert _parse_synopsis(_table_synopses()[name]) == _parser_arguments(name)


def test_the_readme_says_which_commands_take_socket_and_json() -> None:
    said = re.search(r"The client commands \(all but (.*?), which do not talk", README)
    assert said is not None
    not_clients = set(re.findall(r"`([a-z-]+)`", said.group(1)))
    assert not_clients == {n for n, c in cli.COMMANDS.items() if not c.client}
    for name, command in cli.COMMANDS.items():
        flags = {f for a in _subparser(name)._actions for f in a.option_strings}
        assert ({"--socket", "--json"} <= flags) == command.client, name


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_help_notes_ids_only_where_a_command_takes_one(name: str) -> None:
    text = _subparser(name).format_help()
    takes_id = any(a.metavar == "ID" for a in _subparser(name)._actions)
    assert (IDS_NOTE in " ".join(text.split())) == takes_id
    assert (CLIENT_NOTE.split("\n")[0] in text) == cli.COMMANDS[name].client


def test_help_says_what_the_issue_found_missing() -> None:
    assert "lifts `failed`" in " ".join(_subparser("resume").format_help().split())
    serve = " ".join(_subparser("serve").format_help().split())
    assert "$XDG_CONFIG_HOME/acpd/config.toml" in serve
    chat = " ".join(_subparser("chat").format_help().split())
    assert "Slash commands: /interrupt, /resume, /queue, /answer, /decline, /help, /quit" in chat
    assert "A number (or an option id) answers the oldest open permission request" in chat
    permit = " ".join(_subparser("permit").format_help().split())
    assert "the request's id (`p7-1`), as `acpd show ID`" in permit
    assert "leave it out when only one request is open" in permit


def _allowlist_in(text: str, start: str, end: str) -> set[str]:
    flat = " ".join(text.split())
    begin = flat.index(start) + len(start)
    return set(re.findall(r"[A-Za-z_]+\*?", flat[begin : flat.index(end, begin)]))


def test_the_agent_environment_is_the_same_in_the_readme_the_unit_and_the_code() -> None:
    words = set(allowlist_words())
    assert words == ENV_NAMES | {p + "*" for p in ENV_PREFIXES}
    readme = _allowlist_in(README, "reduced to an allow-list (", ")")
    assert readme == words
    unit = render_service("/x/acpd").replace("\n# ", " ")
    assert _allowlist_in(unit, "allow-list of this environment:", ", plus") == words


@pytest.mark.subprocess
def test_the_demo_agent_says_how_to_use_it() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "daemon.agents.demo", "--help"],
        capture_output=True, text=True, timeout=30, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: python -m daemon.agents.demo")
    text = " ".join(proc.stdout.split())
    assert 'put the word "permission" in a message' in text
    for hook in ("/echo TEXT", "/slow N", "/flood N", "/hang", "/crash"):
        assert hook in text
    assert "ACPD_DEMO_DELAY" in text
    assert "ACPD_DEMO_DIR" in text
    assert "python -m daemon.agents.demo --help" in README
