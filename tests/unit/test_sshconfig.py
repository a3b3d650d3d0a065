"""ssh_config lookups answered by `ssh -G` (tasks/ssh/sshconfig.py): Include and Match as ssh reads them."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from fabric import Connection
from fabric.config import Config

from labhop.ssh.sshconfig import OpenSSHConfig, needs_ssh, settings, use_ssh_g

DEFAULTS = {"user": ["ada"], "hostname": ["x"], "port": ["22"], "stricthostkeychecking": ["ask"],
            "identityfile": ["~/.ssh/id_rsa", "~/.ssh/id_ed25519"], "batchmode": ["no"]}


def test_only_what_the_config_sets_is_handed_on_as_paramiko_would() -> None:
    resolved = {"user": ["ada"], "hostname": ["10.0.0.5"], "port": ["22"], "stricthostkeychecking": ["false"],
                "identityfile": ["~/k"], "batchmode": ["no"], "proxyjump": ["bastion"],
                "proxycommand": ["nc %h %p"], "userknownhostsfile": ["/kh 10.0.0.5"]}
    got = settings(resolved, DEFAULTS, "gpu")
    assert got["hostname"] == "10.0.0.5" and got["user"] == "ada" and got["port"] == "22"  # always
    assert got["stricthostkeychecking"] == "no"  # -G's false, ssh_config's no
    assert got["identityfile"] == [str(Path("~/k").expanduser())] and "batchmode" not in got
    assert got["proxyjump"] == "bastion" and got["proxycommand"] == "nc 10.0.0.5 22"
    assert got["userknownhostsfile"] == "/kh 10.0.0.5"
    assert "identityfile" not in settings({**DEFAULTS}, DEFAULTS, "x")  # ssh's default keys are no setting


def test_needs_ssh_only_for_what_paramiko_reads_otherwise(tmp_path: Path) -> None:
    plain, included = tmp_path / "plain", tmp_path / "inc"
    plain.write_text("Host a\n    HostName 10.0.0.1\n")
    included.write_text("# hosts\n  Include conf.d/*.conf\n")
    assert not needs_ssh(str(plain)) and not needs_ssh(str(tmp_path / "none"))
    assert not needs_ssh(str(included))  # an Include that finds nothing reads as without it
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "lab.conf").write_text("Host b\n")
    assert needs_ssh(str(included))
    (tmp_path / "m").write_text("Match host a exec \"true\"\n    Port 2\n")
    assert needs_ssh(str(tmp_path / "m"))


@pytest.mark.skipif(shutil.which("ssh") is None, reason="no ssh client")
def test_fabric_sees_hosts_from_an_included_file_and_its_clones_too(tmp_path: Path) -> None:
    (tmp_path / "hosts.conf").write_text("Host gpu\n    HostName 10.9.8.7\n    Port 2200\n    User ada\n"
                                         "    ProxyJump door\n    UserKnownHostsFile /kh/%h\n"
                                         "Host door\n    HostName 192.0.2.1\n    User bob\n")
    cfg = tmp_path / "ssh_config"
    cfg.write_text(f"Include {tmp_path}/hosts.conf\n")
    config = Config(runtime_ssh_path=str(cfg))
    config.load_ssh_config()
    assert Connection("gpu", config=config).host == "gpu"  # paramiko alone: no Include
    use_ssh_g(config)
    assert isinstance(config.base_ssh_config, OpenSSHConfig)
    cxn = Connection("gpu", config=config)
    assert (cxn.host, cxn.user, cxn.port) == ("10.9.8.7", "ada", 2200)
    assert cxn.ssh_config["userknownhostsfile"] == "/kh/10.9.8.7"
    gateway = cxn.gateway  # Fabric builds it from a clone of the config
    assert isinstance(gateway, Connection) and (gateway.host, gateway.user) == ("192.0.2.1", "bob")
    assert config.clone().base_ssh_config is config.base_ssh_config


def test_left_alone_when_paramiko_is_asked_for_or_nothing_needs_ssh(tmp_path: Path, monkeypatch) -> None:
    cfg = tmp_path / "ssh_config"
    cfg.write_text("Include other\n")
    config = Config(runtime_ssh_path=str(cfg))
    config.load_ssh_config()
    monkeypatch.setenv("LABHOP_TRANSPORT", "paramiko")
    use_ssh_g(config)
    assert not isinstance(config.base_ssh_config, OpenSSHConfig)
    monkeypatch.delenv("LABHOP_TRANSPORT")
    cfg.write_text("Host a\n    HostName 10.0.0.1\n")
    use_ssh_g(config)
    assert not isinstance(config.base_ssh_config, OpenSSHConfig)


def test_ssh_reads_its_config_from_the_passwd_home_not_home(tmp_path: Path, monkeypatch) -> None:
    """ssh takes ~/.ssh/config from the passwd entry; with HOME elsewhere (CI jobs, tests) it would not
    see the file Fabric read, so labhop keeps telling ssh the host, user, port and keys (and no ssh -G)."""
    from labhop.ssh.sshconfig import ssh_reads_what_fabric_reads

    assert ssh_reads_what_fabric_reads(str(tmp_path / "given_with_-S"))
    monkeypatch.setenv("HOME", str(tmp_path))
    assert not ssh_reads_what_fabric_reads(None)
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "config").write_text("Include conf.d/*\n")
    (tmp_path / ".ssh" / "conf.d").mkdir()
    (tmp_path / ".ssh" / "conf.d" / "a").write_text("Host a\n")
    config = Config()
    config.load_ssh_config()
    use_ssh_g(config)
    assert not isinstance(config.base_ssh_config, OpenSSHConfig)
