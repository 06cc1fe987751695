"""The live FreeBSD system every test in this folder checks; skipped with the reason where there is none.

See freebsd_target.py for how the system is chosen (this FreeBSD host, or a booted fpvm VM over ssh).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from freebsd_target import Target, from_environment, unavailable


@pytest.fixture(scope="session")
def target() -> Target:
    found = from_environment()
    why = unavailable(found)
    if why is not None or found is None:
        pytest.skip(why or "no target")
    return found


@pytest.fixture(scope="session")
def arch(target: Target) -> str:
    """FreeBSD's name of the target's architecture (`amd64`, `aarch64`)."""
    return target.check("uname -p").strip()


@pytest.fixture(scope="session")
def config(target: Target) -> dict[str, Any]:
    """The Ignition config the guest was given, read back through fw_cfg the way the agent reads it."""
    raw = target.check("fpvm debug fwcfg get opt/com.coreos/config").encode()
    data: dict[str, Any] = json.loads(raw)
    return data


@pytest.fixture(scope="session")
def machine_user(config: dict[str, Any]) -> str:
    """podman's machine user: the first non-root user of the config (``core`` unless --username)."""
    for user in config.get("passwd", {}).get("users", []):
        if user.get("name") != "root" and user.get("shouldExist", True) is not False:
            return str(user["name"])
    pytest.fail("the config names no machine user")


@pytest.fixture(scope="session")
def last_boot(target: Target) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(target.read("/var/db/fpvm/last-boot.json"))
    return data
