"""Helpers shared by the image tests: the image area's own command parser, a FreeBSD-like sshd_config."""

from __future__ import annotations

import argparse

from fpvm.image import cli

# The head of FreeBSD's /etc/ssh/sshd_config (crypto/openssh/sshd_config): no Include line.
FREEBSD_SSHD_CONFIG = """\
#\t$OpenBSD: sshd_config,v 1.105 2024/12/03 14:12:47 dtucker Exp $

# This is the sshd server system-wide configuration file.  See
# sshd_config(5) for more information.

#PermitRootLogin no
AuthorizedKeysFile\t.ssh/authorized_keys
Subsystem\tsftp\t/usr/libexec/sftp-server
"""


def image_parser() -> argparse.ArgumentParser:
    """Only this area's subcommands, so these tests do not depend on the other areas' state."""
    parser = argparse.ArgumentParser(prog="fpvm")
    cli.register(parser.add_subparsers(dest="command"))
    return parser

