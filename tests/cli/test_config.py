"""The config file: presets merged with entries, pass_env, missing files, one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from daemon.agents._process import agent_env
from daemon.config import AgentConfig, Config, ConfigError, load_config, parse_config

ROOT = Path(__file__).resolve().parents[2]
ENVIRON = {
    "PATH": "/bin",
    "ANTHROPIC_API_KEY": "sk-ant",
    "CLAUDE_CODE_USE_BEDROCK": "1",
    "OPENAI_API_KEY": "sk-oai",
    "CODEX_HOME": "/c",
    "GEMINI_API_KEY": "g",
    "GOOGLE_CLOUD_PROJECT": "p",
    "AWS_PROFILE": "dev",
    "HTTPS_PROXY": "http://proxy:3128",
    "no_proxy": "localhost",
    "NOTIFY_SOCKET": "/run/systemd/notify",
    "LISTEN_FDS": "1",
    "WATCHDOG_USEC": "100",
    "SECRET": "never",
}


def run_env(cfg: Config, name: str) -> dict[str, str]:
    """What agent `name` would run with, given ENVIRON as the daemon's environment."""
    return agent_env(cfg.all_agents(ENVIRON)[name].env, ENVIRON)


def test_presets_pass_their_keys_and_everyone_gets_the_proxies() -> None:
    cfg = Config()
    assert run_env(cfg, "claude") == {
        "PATH": "/bin",
        "ANTHROPIC_API_KEY": "sk-ant",
        "CLAUDE_CODE_USE_BEDROCK": "1",
        "HTTPS_PROXY": "http://proxy:3128",
        "no_proxy": "localhost",
    }
    codex = run_env(cfg, "codex")
    assert (codex["OPENAI_API_KEY"], codex["CODEX_HOME"]) == ("sk-oai", "/c")
    assert "ANTHROPIC_API_KEY" not in codex
    gemini = run_env(cfg, "gemini")
    assert (gemini["GEMINI_API_KEY"], gemini["GOOGLE_CLOUD_PROJECT"]) == ("g", "p")
    demo = run_env(cfg, "demo")
    assert "HTTPS_PROXY" in demo
    assert not any(k.endswith("_API_KEY") for k in demo)


def test_a_preset_entry_merges_with_the_preset() -> None:
    cfg = parse_config(
        '[agents.claude]\nenv = { CLAUDE_CODE_MAX_OUTPUT_TOKENS = "8000", ANTHROPIC_API_KEY = "f" }'
        '\npass_env = ["AWS_*"]\n'
    )
    claude = cfg.all_agents(ENVIRON)["claude"]
    assert claude.command == ("npx", "-y", "@agentclientprotocol/claude-agent-acp")
    env = run_env(cfg, "claude")
    assert env["AWS_PROFILE"] == "dev"  # added to the preset's list
    assert env["CLAUDE_CODE_USE_BEDROCK"] == "1"  # the preset's still there
    assert env["ANTHROPIC_API_KEY"] == "f"  # the file's env wins over the environment
    assert env["CLAUDE_CODE_MAX_OUTPUT_TOKENS"] == "8000"
    cfg = parse_config('[agents.gemini]\ncommand = "/opt/gemini --acp"\n')
    assert cfg.all_agents(ENVIRON)["gemini"].command == ("/opt/gemini", "--acp")
    assert "GEMINI_API_KEY" in run_env(cfg, "gemini")


def test_systemd_variables_never_pass_even_if_named() -> None:
    cfg = parse_config(
        '[agents.x]\ncommand = "x"\n'
        'pass_env = ["NOTIFY_SOCKET", "LISTEN_*", "WATCHDOG_USEC", "SECRET"]\n'
    )
    env = run_env(cfg, "x")
    assert env["SECRET"] == "never"  # named, so passed
    assert not {"NOTIFY_SOCKET", "LISTEN_FDS", "WATCHDOG_USEC"} & env.keys()


def test_all_agents_reads_the_environment_of_the_moment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "later")
    assert Config().all_agents()["codex"].env["OPENAI_API_KEY"] == "later"


def test_a_new_agent_needs_a_command() -> None:
    with pytest.raises(ConfigError, match=r"agents\.mine\.command: required \('mine' is not"):
        parse_config('[agents.mine]\nenv = { A = "1" }\n')
    cfg = parse_config('[agents.mine]\ncommand = ["my-agent", "--acp"]\n')
    assert cfg.all_agents({})["mine"] == AgentConfig(command=("my-agent", "--acp"))


# --- the file itself ---------------------------------------------------------------------------


def test_only_the_default_file_may_be_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ACPD_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert load_config() == Config()  # the default path, absent: the defaults
    missing = tmp_path / "typo.toml"
    with pytest.raises(ConfigError, match=f"^{missing}: no such config file$"):
        load_config(missing)
    monkeypatch.setenv("ACPD_CONFIG", str(missing))
    with pytest.raises(ConfigError, match="no such config file"):
        load_config()
    missing.write_text("drain_timeout = 2\n")
    assert load_config().drain_timeout == 2.0
    monkeypatch.setenv("ACPD_CONFIG", "/dev/null")  # how to say "no config at all"
    assert load_config() == Config()


@pytest.mark.subprocess
def test_a_missing_config_stops_serve(tmp_path: Path) -> None:
    # A real process with a timeout: before, the daemon started on the defaults, for ever.
    missing = tmp_path / "nope.toml"
    argv = [sys.executable, "-m", "daemon.server", "serve", "--data-dir", str(tmp_path / "d"),
            "--socket", str(tmp_path / "s.sock"), "--no-ws", "--config", str(missing)]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "LISTEN_FDS")}
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, env=env, cwd=ROOT)
    assert (proc.returncode, proc.stderr) == (1, f"acpd: error: {missing}: no such config file\n")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('permission_policy = "sometimes"',
         "permission_policy: expected one of 'ask', 'allow', 'deny', got 'sometimes'"),
        ("permission_default = 1", "permission_default: expected one of 'reject', 'allow',"),
        ('ws = "nope"', "ws: expected HOST:PORT"),
        ('ws = "0.0.0.0:7421"', "ws: 0.0.0.0:7421 is not a loopback address: serving the"),
        ('ws = "example.com:80"', "ws: 'example.com' is not an IP address or localhost"),
        ("[agents.x]\ncommand = 3", "agents.x.command: expected a string or a list of strings"),
        ('[agents.x]\ncommand = ["a", 3]', "agents.x.command: expected a string or a list"),
        ("[agents.x]\ncommand = \"a 'b\"", "agents.x.command: cannot split"),
        ('[agents.x]\ncommand = "a"\nenv = { A = 1 }', "agents.x.env.A: expected a string"),
        ('[agents.x]\ncommand = "a"\nenv = 3', "agents.x.env: expected a table"),
        ('[agents.claude]\npass_env = "AWS_*"', "agents.claude.pass_env: expected a list"),
        ('[agents.claude]\npass_env = ["A B"]', "agents.claude.pass_env: 'A B' is not a variable"),
        ('[agents.x]\ncomand = "a"', "agents.x.comand: unknown key"),
        ("bogus = 1", "bogus: unknown key"),
        ("agents = 3", "agents: expected a table"),
        ("max_crashes = 2.5", "max_crashes: expected an integer, got number 2.5"),
        ("drain_timeout = true", "drain_timeout: expected a number, got boolean True"),
        ("drain_timeout = -1", "drain_timeout: must be positive"),
        ("max_starting = 0", "max_starting: must be at least 1"),
        ("default_agent = 3", "default_agent: expected a string, got integer 3"),
        ('default_agent = "nope"', "default_agent: no agent named 'nope' (known: claude, codex"),
        ("drain_timeout = ", "Invalid value"),
        ('[agents.codex]\nauth = 3', "agents.codex.auth: expected a string, got integer 3"),
        ('[agents.codex]\nauth_vars = ["A"]', "agents.codex.auth_vars: expected a table of"),
        ('[agents.codex]\nauth_vars = { k = [] }', "auth_vars: k: expected a non-empty"),
        ('[agents.codex]\nauth_vars = { k = ["A*"] }', "agents.codex.auth_vars: k: 'A*' is not a"),
        ('[agents.codex]\nmcp_servers = {}', "agents.codex.mcp_servers: expected a list of tables"),
        ('[agents.codex]\nmcp_servers = [3]', "agents.codex.mcp_servers[0]: expected a table"),
        ('[agents.codex]\nmcp_servers = [{command = "x"}]',
         "agents.codex.mcp_servers[0]: name: required"),
        ('[agents.codex]\nmcp_servers = [{name = "a"}]',
         "agents.codex.mcp_servers[0]: command: required for a stdio server"),
        ('[agents.codex]\nmcp_servers = [{name = "a", command = "x", url = "http://h"}]',
         "agents.codex.mcp_servers[0]: url: only for http and sse servers"),
        ('[agents.codex]\nmcp_servers = [{name = "a", type = "http", url = "http://h", '
         'command = "x"}]', "agents.codex.mcp_servers[0]: command: only for stdio servers"),
        ('[agents.codex]\nmcp_servers = [{name = "a", type = "ws", url = "http://h"}]',
         "mcp_servers[0]: type: expected 'stdio', 'http' or 'sse', got 'ws'"),
        ('[agents.codex]\nmcp_servers = [{name = "a", type = "sse", url = "h"}]',
         "mcp_servers[0]: url: required for an sse server, an http:// or https:// URL"),
        ('[agents.codex]\nmcp_servers = [{name = "a", command = "x", args = "y"}]',
         "mcp_servers[0]: args: expected a list of strings"),
        ('[agents.codex]\nmcp_servers = [{name = "a", command = "x", env = { A = 1 }}]',
         "mcp_servers[0]: env: names and values must be strings"),
        ('[agents.codex]\nmcp_servers = [{name = "a", command = "x", env = [{name = "A"}]}]',
         "mcp_servers[0]: env: expected a table of strings or a list of {name, value}"),
        ('[agents.codex]\nmcp_servers = [{name = "a", command = "x"}, {name = "a", command = "y"}]',
         "mcp_servers[1]: another server is named 'a'"),
        ('[agents.codex]\nmcp_servers = [{name = "a", command = "x", cmd = "y"}]',
         "mcp_servers[0]: unknown key 'cmd'"),
    ],
)  # fmt: skip
def test_every_error_is_one_line_naming_the_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text + "\n", source="c.toml")
    shown = str(info.value)
    assert shown.startswith("c.toml: ")
    assert message in shown
    assert "\n" not in shown
    assert "unknown error" not in shown
    assert "typing." not in shown


def test_good_values_load() -> None:
    cfg = parse_config(
        'default_agent = "claude"\ndrain_timeout = 2\nws = "localhost:0"\nmax_crashes = 5\n'
        'permission_policy = "deny"\n'
    )
    assert (cfg.default_agent, cfg.drain_timeout, cfg.ws, cfg.max_crashes) == (
        "claude", 2.0, "localhost:0", 5
    )  # fmt: skip
    assert parse_config('ws = ""').ws == ""  # off
    assert parse_config("max_starting = 3").max_starting == 3
    assert parse_config("").max_starting == max(2, len(os.sched_getaffinity(0)))
    assert parse_config('ws = "[::1]:7421"').ws == "[::1]:7421"


def test_readme_example_config_loads() -> None:
    """The README's example configs are valid (and so stay in step with the code)."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    examples = [block.partition("```")[0] for block in readme.split("```toml\n")[1:]]
    assert len(examples) >= 2  # the dashboard's, the configuration's
    for example in examples:
        cfg = parse_config(example, source="README.md")
        assert "claude" in cfg.all_agents({})


def test_auth_and_mcp_servers_load_as_acp_objects() -> None:
    from protocol import acp

    cfg = parse_config(
        '[agents.codex]\nauth = "chatgpt"\n'
        'auth_vars = { "api-key" = ["MY_KEY"] }\n'
        "mcp_servers = [\n"
        '  { name = "fs", command = "mcp-fs", args = ["--root", "/"], env = { ROOT = "/" } },\n'
        '  { name = "git", command = "mcp-git", env = [{ name = "A", value = "1" }] },\n'
        '  { name = "web", type = "http", url = "https://h/mcp", headers = { X = "y" } },\n'
        '  { name = "old", type = "sse", url = "http://h/sse" },\n'
        "]\n"
    )
    codex = cfg.all_agents({})["codex"]
    assert codex.auth == "chatgpt"
    # Ours win over the preset's hint for the same method; the preset's command stays.
    assert codex.auth_vars == {"api-key": ("MY_KEY",)}
    assert codex.command == ("npx", "-y", "@agentclientprotocol/codex-acp")
    fs, git, web, old = codex.mcp_servers
    assert fs == acp.McpServerStdio(
        name="fs",
        command="mcp-fs",
        args=["--root", "/"],
        env=[acp.EnvVariable(name="ROOT", value="/")],
    )
    assert git.env == [acp.EnvVariable(name="A", value="1")]
    assert web == acp.McpServerHttp(
        name="web", url="https://h/mcp", headers=[acp.HttpHeader(name="X", value="y")]
    )
    assert old == acp.McpServerSse(name="old", url="http://h/sse")


def test_presets_know_how_codex_and_gemini_authenticate() -> None:
    agents = Config().all_agents({})
    assert agents["codex"].command == ("npx", "-y", "@agentclientprotocol/codex-acp")
    assert agents["codex"].auth_vars == {"api-key": ("CODEX_API_KEY", "OPENAI_API_KEY")}
    assert agents["gemini"].command == ("npx", "-y", "@google/gemini-cli", "--acp")
    assert agents["gemini"].auth_vars == {"gemini-api-key": ("GEMINI_API_KEY",)}
    assert (agents["claude"].auth, agents["claude"].mcp_servers) == ("", ())
