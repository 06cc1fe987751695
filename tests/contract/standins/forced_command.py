"""sshd's ForceCommand in the simulated VM: stands in for the guest's login shell and sudo.

podman runs shell lines such as ``sudo chattr -i / ; sudo mkdir -p /tmp ; sudo chattr +i /`` over
ssh. On the FreeBSD guest sh would run them and sudo would find fpvm's linux-compat launchers first
on its secure_path. Here the line (``SSH_ORIGINAL_COMMAND``) is parsed, never executed by a shell:

* ``;`` separates commands; the status is the last one's (like sh). Other operators are refused.
* a leading ``sudo`` is dropped (the login user is a sudoer on the guest);
* ``mount``, ``chattr``, ``systemctl``, ``systemd-tmpfiles``: the real launcher scripts from
  ``fpvm.guest.compat.launchers()``, whose ``fpvm`` is a wrapper adding ``--record`` and ``--root``;
* ``mkdir [-p] DIR``: done inside the staged root; ``true``: status 0;
* ``bash -c 'echo TEXT > FILE'``: the file is written inside the staged root (its folder must exist,
  as for bash's redirection);
* ``/usr/bin/bash`` with a script on stdin (podman 5.x, as root): the script runs in the real bash
  with the guest's ``/etc/`` mapped to the staged root and the launchers first on PATH.

Every line is logged to the harness's ssh log as JSON ``{"user", "command"}`` (with ``"stdin"``, the
script, for a bare ``bash``: what a replay needs). A login as ``root``
(podman 5's proxy script) then runs as the harness's podman user (``guest_uid``/``guest_gid``): the
guest's root owns the staged root, never anything on the host.
Usage: ``python3 forced_command.py HARNESS_JSON`` (PYTHONPATH holds fpvm's sources).
"""

from __future__ import annotations

import getpass
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from fpvm.guest.rootfs import RootFS

SHIMS = ("mount", "chattr", "systemctl", "systemd-tmpfiles")


def split_commands(line: str) -> list[list[str]]:
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|<>")
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    for token in lexer:
        if token == ";":
            commands.append([])
        elif token and set(token) <= set(";&|<>"):
            raise ValueError(f"operator {token!r} is not emulated")
        else:
            commands[-1].append(token)
    return [c for c in commands if c]


def run_bash_c(cfg: dict[str, Any], script: str) -> int:
    """``bash -c 'echo TEXT > FILE'`` (podman's tmpfiles.d line); nothing else."""
    lexer = shlex.shlex(script, posix=True, punctuation_chars=";&|<>")
    lexer.whitespace_split = True
    tokens = list(lexer)
    if len(tokens) >= 3 and tokens[0] == "echo" and tokens[-2] == ">":
        root = RootFS(cfg["staged"])
        parent = tokens[-1].rsplit("/", 1)[0] or "/"
        if not root.is_dir(parent):  # bash's redirection creates no folders
            print(f"bash: line 1: {tokens[-1]}: No such file or directory", file=sys.stderr)
            return 1
        root.write(tokens[-1], (" ".join(tokens[1:-2]) + "\n").encode(), 0o644, None, None)
        return 0
    print(f"bash -c {script!r}: not emulated", file=sys.stderr)
    return 127


def run_bash_stdin(cfg: dict[str, Any], script: str) -> int:
    """podman 5.x's proxy script: real bash, guest /etc mapped into the staged root."""
    staged_etc = os.path.join(cfg["staged"], "etc") + "/"
    script = script.replace("/etc/", staged_etc)
    env = {"PATH": f"{cfg['launchers']}:/usr/bin:/bin", "LC_ALL": "C.UTF-8", "HOME": cfg["staged"]}
    return subprocess.run(["/bin/bash"], input=script, text=True, env=env, check=False).returncode


def is_bare_bash(argv: list[str]) -> bool:
    return len(argv) == 1 and os.path.basename(argv[0]) == "bash"


def run_one(cfg: dict[str, Any], argv: list[str], stdin: str = "") -> int:
    if argv[0] == "sudo":
        argv = argv[1:]
    if not argv:
        return 1
    name = os.path.basename(argv[0])
    if name in SHIMS:
        return subprocess.run([os.path.join(cfg["launchers"], name), *argv[1:]], check=False).returncode
    if name == "true":
        return 0
    if name == "mkdir":
        paths = [a for a in argv[1:] if not a.startswith("-")]
        root = RootFS(cfg["staged"])
        for path in paths:
            root.makedirs(path, 0o755, None, None)
        return 0
    if name == "bash" and len(argv) == 3 and argv[1] == "-c":
        return run_bash_c(cfg, argv[2])
    if is_bare_bash(argv):
        return run_bash_stdin(cfg, stdin)
    print(f"{argv[0]}: not emulated by the contract test's guest shell", file=sys.stderr)
    return 127


def main() -> int:
    cfg: dict[str, Any] = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
    line = os.environ.get("SSH_ORIGINAL_COMMAND", "")
    entry = {"user": getpass.getuser(), "command": line}  # sshd's USER: "root" stays "root" here
    if os.geteuid() == 0 and "guest_uid" in cfg:
        os.setgroups([])
        os.setgid(int(cfg["guest_gid"]))
        os.setuid(int(cfg["guest_uid"]))
    try:
        commands = split_commands(line)
    except ValueError as exc:
        commands, refused = [], exc
    else:
        refused = None
    stdin = sys.stdin.read() if any(is_bare_bash(c) for c in commands) else ""
    if stdin:
        entry["stdin"] = stdin
    with open(cfg["ssh_log"], "a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry) + "\n")
    if not line:
        print("interactive logins are not emulated", file=sys.stderr)
        return 1
    if refused is not None:
        print(f"cannot run {line!r}: {refused}", file=sys.stderr)
        return 2
    status = 0
    for argv in commands:
        sys.stdout.flush()
        status = run_one(cfg, argv, stdin)
    return status


if __name__ == "__main__":
    sys.exit(main())
