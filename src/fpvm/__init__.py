"""fpvm: FreeBSD VMs for Podman.

The packages ``fpvm.ignition``, ``fpvm.fwcfg`` and ``fpvm.guest`` run inside the FreeBSD guest on the
base system's python3, so they use the standard library only. ``fpvm.image`` and ``fpvm.machine`` run
on the host and may use the dependencies declared in pyproject.toml.
"""

__version__ = "0.1.0"
