"""Smaller facts of the provisioned system: time zone, host name, registries, docker, rc.conf.d, CA bundle."""

from __future__ import annotations

from typing import Any

from freebsd_target import Target


def _file_contents(config: dict[str, Any], path: str) -> str | None:
    """The decoded contents of a data: URL file of the config (podman's are all data URLs)."""
    import urllib.parse

    for f in config.get("storage", {}).get("files", []):
        if f.get("path") == path:
            source = f.get("contents", {}).get("source", "")
            return urllib.parse.unquote(source.split(",", 1)[1]) if source.startswith("data:,") else None
    return None


def test_localtime_link_is_honoured(target: Target, config: dict[str, Any]) -> None:
    links = {link["path"]: link["target"] for link in config.get("storage", {}).get("links", [])}
    if "/etc/localtime" not in links:
        assert target.exists("/etc/localtime")
        return
    zone = links["/etc/localtime"].split("zoneinfo/", 1)[1]
    assert target.check("readlink /etc/localtime").strip().endswith(zone)
    assert target.check("date +%Z").strip() != ""
    assert target.check("cat /var/db/zoneinfo").strip() == zone


def test_hostname_from_the_config(target: Target, config: dict[str, Any]) -> None:
    wanted = (_file_contents(config, "/etc/hostname") or "").strip()
    configured = target.check("sysrc -n hostname").strip()
    if wanted:
        assert configured == wanted and target.check("hostname").strip() == wanted
    else:
        assert configured == target.check("hostname").strip()


def test_podman_reads_fpvms_containers_configuration(target: Target) -> None:
    """containers.conf and registries.conf.d are where FreeBSD's podman reads: /usr/local/etc/containers."""
    info = target.check("podman info --format '{{json .Registries}}'")
    assert "docker.io" in info
    assert target.exists("/etc/containers/podman-machine")


def test_docker_command_runs_podman(target: Target) -> None:
    assert "podman" in target.check("/usr/local/bin/docker --version").lower()


def test_sysrc_creates_a_missing_rc_conf_d_file(target: Target) -> None:
    target.check("rm -f /tmp/fpvm-sysrc.conf && sysrc -f /tmp/fpvm-sysrc.conf fpvm_check_enable=YES")
    assert target.check("cat /tmp/fpvm-sysrc.conf").strip() == 'fpvm_check_enable="YES"'


def test_python_finds_a_ca_bundle(target: Target) -> None:
    """https merge sources signed by a public CA need the base bundle (certctl, /etc/ssl/cert.pem)."""
    script = "import ssl; print(ssl.get_default_verify_paths().cafile or '')"
    path = target.check(f'python3 -c "{script}"').strip()
    assert path and target.exists(path), path
