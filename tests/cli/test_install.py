"""The unit files and `acpd install-systemd`: rendering, `systemd-analyze verify`, writing
without clobbering, and the CLI command."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from daemon.cli import commands as cli
from daemon.cli.install import (
    InstallError,
    acpd_command,
    exec_words,
    install_units,
    render_service,
    render_socket,
    run_install,
    stop_timeout,
    user_unit_dir,
)
from daemon.config import Config

REPO = Path(__file__).resolve().parents[2]
HANG_GUARD = 60


@pytest.fixture(autouse=True)
def _no_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """install-systemd reads the config `acpd serve` would: none here, whatever the host has."""
    (defaults := tmp_path / "defaults.toml").touch()
    monkeypatch.setenv("ACPD_CONFIG", str(defaults))


def test_repository_units_are_the_rendered_ones() -> None:
    """`systemd/` holds what the installer writes for `pip install --user` (~/.local/bin)."""
    service = (REPO / "systemd" / "acpd.service").read_text()
    assert service == render_service("%h/.local/bin/acpd"), (
        "regenerate: python -c 'from daemon.cli.install import *; "
        'print(render_service("%h/.local/bin/acpd"), end="")\' > systemd/acpd.service'
    )
    assert (REPO / "systemd" / "acpd.socket").read_text() == render_socket()


def _settings(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


def test_unit_settings() -> None:
    service = _settings(render_service("/x/acpd"))
    for key, value in {
        "Type": "notify", "NotifyAccess": "main", "ExecStart": "/x/acpd serve",
        "Restart": "on-failure", "WatchdogSec": "30s", "TimeoutStopSec": "20s",
        "KillMode": "mixed", "Delegate": "yes", "NoNewPrivileges": "yes",
        "Requires": "acpd.socket",
        "After": "acpd.socket", "Also": "acpd.socket", "WantedBy": "default.target",
    }.items():  # fmt: skip
        assert service[key] == [value], key
    for absent in ("PrivateTmp", "ProtectSystem", "ProtectHome", "MemoryDenyWriteExecute",
                   "RestrictNamespaces", "Environment"):  # fmt: skip
        assert absent not in service, absent
    alone = _settings(render_service("/x/acpd", socket=False))
    assert "acpd.socket" not in render_service("/x/acpd", socket=False)
    assert alone["WantedBy"] == ["default.target"]
    sock = _settings(render_socket())
    for key, value in {
        "ListenStream": "%t/acpd/acpd.sock", "SocketMode": "0600", "DirectoryMode": "0700",
        "Service": "acpd.service", "FileDescriptorName": "api",
    }.items():  # fmt: skip
        assert sock[key] == [value], key


def test_stop_timeout_follows_the_config() -> None:
    """Above the daemon's own bound: shutdown_grace, however many agents (and whatever
    stop_grace: agents still running are killed within the grace)."""
    assert stop_timeout(Config()) == 20
    raised = Config(shutdown_grace=120.5, stop_grace=5.5)
    assert stop_timeout(raised) == 131  # 120.5 + 10, rounded up
    assert _settings(render_service("/x/acpd", config=raised))["TimeoutStopSec"] == ["131s"]


def test_demo_delay_is_the_demo_agents_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """The unit sets no ACPD_DEMO_DELAY: the demo agent's own default is what it would say."""
    from daemon.agents.demo import delay_from_env

    monkeypatch.delenv("ACPD_DEMO_DELAY", raising=False)
    assert delay_from_env() == 0.05
    assert "ACPD_DEMO_DELAY=" not in render_service("/x/acpd")


def test_exec_words() -> None:
    assert exec_words(["/usr/bin/python3", "-m", "daemon.cli"]) == "/usr/bin/python3 -m daemon.cli"
    assert exec_words(["/home/a b/acpd"]) == '"/home/a b/acpd"'
    assert exec_words(["/p/100%/$HOME/acpd"]) == "/p/100%%/$$HOME/acpd"
    assert exec_words(['/q/"x"\\y']) == '"/q/\\"x\\"\\\\y"'
    with pytest.raises(InstallError):
        exec_words(["/a\nb"])


def test_acpd_command(tmp_path: Path) -> None:
    script = tmp_path / "bin" / "acpd"
    script.parent.mkdir()
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    assert acpd_command(str(script)) == [str(script)]
    fallback = [os.path.abspath(sys.executable), "-m", "daemon.cli"]
    assert acpd_command(str(REPO / "daemon" / "cli.py")) == fallback  # python -m daemon.cli
    script.chmod(0o644)
    assert acpd_command(str(script)) == fallback  # not something systemd could run
    assert acpd_command("") == fallback


def test_user_unit_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/home/u")
    assert user_unit_dir({}) == Path("/home/u/.config/systemd/user")
    assert user_unit_dir({"XDG_CONFIG_HOME": "rel"}) == Path("/home/u/.config/systemd/user")
    assert user_unit_dir({"XDG_CONFIG_HOME": "/c"}) == Path("/c/systemd/user")


# --- systemd-analyze verify ---------------------------------------------------------------------


def _verify(tmp_path: Path, *units: Path) -> None:
    """`systemd-analyze --user verify`: as user units, so `%t` and `%h` are the user's. Its
    user manager needs a runtime dir; a private one keeps the test off the real session."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed: run scripts/install-system-deps")
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700, exist_ok=True)
    env = dict(os.environ, XDG_RUNTIME_DIR=str(runtime))
    proc = subprocess.run([analyze, "--user", "verify", *map(str, units)], capture_output=True,
                          text=True, env=env, timeout=HANG_GUARD)  # fmt: skip
    # Unknown keys and bad values are only warnings, with exit status 0: both must be clean.
    ours = [line for line in (proc.stdout + proc.stderr).splitlines() if "acpd" in line]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert ours == []


@pytest.mark.subprocess
@pytest.mark.parametrize("socket", [True, False])
def test_rendered_units_verify(tmp_path: Path, socket: bool) -> None:
    """Concrete paths, as the installer writes them (`%h/.local/bin/acpd` need not exist)."""
    config = Config(shutdown_grace=95.5)  # a computed TimeoutStopSec= verifies too
    plan = install_units(tmp_path / "units", acpd_command(), socket=socket, config=config)
    assert "\nTimeoutStopSec=106s\n" in plan[0][1]
    assert [p.name for p, _, _ in plan] == ["acpd.service", "acpd.socket"][: 2 if socket else 1]
    _verify(tmp_path, *(path for path, _, _ in plan))


@pytest.mark.subprocess
def test_odd_executable_path_verifies(tmp_path: Path) -> None:
    odd = tmp_path / "my tools 100%" / "acpd"
    odd.parent.mkdir()
    odd.symlink_to(sys.executable)
    plan = install_units(tmp_path / "units", [str(odd)])
    assert f'ExecStart="{str(odd).replace("%", "%%")}" serve\n' in plan[0][1]
    _verify(tmp_path, *(path for path, _, _ in plan))


def test_verify_catches_mistakes(tmp_path: Path) -> None:
    """The check above would notice a broken unit (warnings included)."""
    bad = tmp_path / "acpd.service"
    bad.write_text(render_service(sys.executable, socket=False).replace(
        "KillMode=mixed", "KillMode=mixd"))  # fmt: skip
    with pytest.raises(AssertionError):
        _verify(tmp_path, bad)


# --- installing ---------------------------------------------------------------------------------


def test_install_writes_then_leaves_alone(tmp_path: Path) -> None:
    units = tmp_path / "cfg" / "systemd" / "user"
    plan = install_units(units, ["/opt/acpd"])
    assert [(p.name, a) for p, _, a in plan] == [("acpd.service", "write"),
                                                 ("acpd.socket", "write")]  # fmt: skip
    assert "ExecStart=/opt/acpd serve\n" in (units / "acpd.service").read_text()
    assert (units / "acpd.socket").read_text() == render_socket()
    assert sorted(os.listdir(units)) == ["acpd.service", "acpd.socket"]  # no temporary files
    again = install_units(units, ["/opt/acpd"])
    assert [a for _, _, a in again] == ["unchanged", "unchanged"]


def test_install_never_clobbers_without_force(tmp_path: Path) -> None:
    units = tmp_path / "units"
    units.mkdir()
    (units / "acpd.service").write_text("# mine\n")
    plan = install_units(units, ["/opt/acpd"])
    assert [(p.name, a) for p, _, a in plan] == [("acpd.service", "conflict"),
                                                 ("acpd.socket", "write")]  # fmt: skip
    # Nothing at all was written: not even the socket, which would not match the service.
    assert (units / "acpd.service").read_text() == "# mine\n"
    assert not (units / "acpd.socket").exists()
    install_units(units, ["/opt/acpd"], force=True)
    assert "ExecStart=/opt/acpd serve" in (units / "acpd.service").read_text()


def test_dry_run_writes_nothing(tmp_path: Path) -> None:
    units = tmp_path / "units"
    plan = install_units(units, ["/opt/acpd"], dry_run=True)
    assert [a for _, _, a in plan] == ["write", "write"]
    assert not units.exists()


ENABLE_BOTH = (
    "enable and start it with:\n"
    "  systemctl --user daemon-reload && systemctl --user enable --now acpd.socket acpd.service\n"
    "optionally, to keep it running after you log out (and start it at boot):\n"
    "  loginctl enable-linger\n"
)


def test_run_install_output(tmp_path: Path) -> None:
    units = tmp_path / "units"
    out = io.StringIO()
    assert run_install(out, socket=True, force=False, dry_run=False, directory=units,
                       command=["/opt/acpd"]) == 0  # fmt: skip
    # Both units enabled: the service starts at login and recovers queued messages at once.
    assert out.getvalue() == (
        f"wrote {units}/acpd.service\nwrote {units}/acpd.socket\n" + ENABLE_BOTH
    )
    out = io.StringIO()
    with pytest.raises(InstallError):  # a dry run shows the new text, and fails likewise
        run_install(out, socket=False, force=False, dry_run=True, directory=units,
                    command=["/opt/acpd"])  # fmt: skip
    text = out.getvalue()
    assert text.startswith(f"# {units}/acpd.service (differs)\n")
    assert "systemctl --user enable --now acpd.service" not in text  # it refuses instead
    with pytest.raises(InstallError, match="exists and differs; --force replaces it"):
        run_install(io.StringIO(), socket=False, force=False, dry_run=False, directory=units,
                    command=["/opt/acpd"])  # fmt: skip
    out = io.StringIO()
    run_install(out, socket=False, force=True, dry_run=False, directory=units,
                command=["/opt/acpd"])  # fmt: skip
    assert f"note: {units}/acpd.socket from an earlier install remains" in out.getvalue()
    assert "systemctl --user enable --now acpd.service\n" in out.getvalue()
    assert "acpd.socket" not in (units / "acpd.service").read_text()


def test_run_install_takes_the_stop_timeout_from_the_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config.toml"
    config.write_text("shutdown_grace = 60.0\nstop_grace = 4.0\n")
    monkeypatch.setenv("ACPD_CONFIG", str(config))
    units = tmp_path / "units"
    run_install(io.StringIO(), socket=True, force=False, dry_run=False, directory=units,
                command=["/opt/acpd"])  # fmt: skip
    assert "\nTimeoutStopSec=70s\n" in (units / "acpd.service").read_text()
    config.write_text("shutdown_grace = -1\n")  # the service would not start: say so now
    with pytest.raises(InstallError, match="shutdown_grace: must be positive"):
        run_install(io.StringIO(), socket=True, force=True, dry_run=False, directory=units,
                    command=["/opt/acpd"])  # fmt: skip


def test_cli_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    units = tmp_path / "systemd" / "user"
    assert cli.main(["install-systemd", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"# {units}/acpd.service (would write)\n" in out
    assert f"ExecStart={exec_words(acpd_command())} serve\n" in out
    assert not units.exists()
    assert cli.main(["install-systemd", "--no-socket"]) == 0
    assert sorted(os.listdir(units)) == ["acpd.service"]
    capsys.readouterr()
    assert cli.main(["install-systemd"]) == 1  # the service differs now: it would need a socket
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"acpd: error: {units}/acpd.service exists and differs")
    assert cli.main(["install-systemd", "--force"]) == 0
    assert sorted(os.listdir(units)) == ["acpd.service", "acpd.socket"]


@pytest.mark.subprocess
def test_installed_acpd_script_names_itself(tmp_path: Path) -> None:
    """Run as the `acpd` console script, ExecStart is that script's absolute path."""
    script = Path(sys.executable).parent / "acpd"
    if not os.access(script, os.X_OK):
        pytest.skip(f"no acpd script next to {sys.executable}")
    env = dict(os.environ, XDG_CONFIG_HOME=str(tmp_path))
    proc = subprocess.run([str(script), "install-systemd"], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=HANG_GUARD)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    service = (tmp_path / "systemd" / "user" / "acpd.service").read_text()
    assert f"\nExecStart={exec_words([str(script)])} serve\n" in service
    assert proc.stdout.endswith(ENABLE_BOTH)
