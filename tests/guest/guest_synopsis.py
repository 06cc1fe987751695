"""A checker for recorded ``pw`` commands against pw(8)'s SYNOPSIS (FreeBSD 14/15 man page):

    pw [-R rootdir] [-V etcdir] useradd [-n] name [-u uid] [-C config] [-q] [-c comment] [-d dir]
       [-e date] [-p date] [-g group] [-G grouplist] [-m] [-M mode] [-k dir] [-w method] [-s shell]
       [-o] [-L class] [-h fd | -H fd] [-N] [-P] [-Y]
    pw [-R rootdir] [-V etcdir] userdel [-n] name|uid | -u uid [-r] [-Y]
    pw [-R rootdir] [-V etcdir] usermod [-n] name|uid [-u newuid] | -u uid [-C config] [-q]
       [-c comment] [-d dir] [-e date] [-p date] [-g group] [-G grouplist] [-l newname] [-m] [-M mode]
       [-k dir] [-w method] [-s shell] [-L class] [-h fd | -H fd] [-N] [-P] [-Y]
    pw [-R rootdir] [-V etcdir] groupadd [-n] name [-g gid] [-C config] [-q] [-M members] [-o]
       [-h fd | -H fd] [-N] [-P] [-Y]
    pw [-R rootdir] [-V etcdir] groupmod [-n] name|gid [-g newgid] | -g gid [-C config] [-q]
       [-l newname] [-M members] [-m newmembers] [-d oldmembers] [-h fd | -H fd] [-N] [-P] [-Y]
    pw [-R rootdir] [-V etcdir] unlock [-n] name|uid | -u uid [-C config] [-q]

``-w method`` is one of no, yes, none, random; ``-h``/``-H`` take a file descriptor (0 = stdin).
"""

from __future__ import annotations

# option -> takes a value
_SYNOPSIS: dict[str, dict[str, bool]] = {
    "useradd": {
        "-n": True, "-u": True, "-C": True, "-q": False, "-c": True, "-d": True, "-e": True, "-p": True,
        "-g": True, "-G": True, "-m": False, "-M": True, "-k": True, "-w": True, "-s": True, "-o": False,
        "-L": True, "-h": True, "-H": True, "-N": False, "-P": False, "-Y": False,
    },
    "userdel": {"-n": True, "-u": True, "-r": False, "-Y": False},
    "usermod": {
        "-n": True, "-u": True, "-C": True, "-q": False, "-c": True, "-d": True, "-e": True, "-p": True,
        "-g": True, "-G": True, "-l": True, "-m": False, "-M": True, "-k": True, "-w": True, "-s": True,
        "-L": True, "-h": True, "-H": True, "-N": False, "-P": False, "-Y": False,
    },
    "groupadd": {
        "-n": True, "-g": True, "-C": True, "-q": False, "-M": True, "-o": False, "-h": True, "-H": True,
        "-N": False, "-P": False, "-Y": False,
    },
    "groupmod": {
        "-n": True, "-g": True, "-C": True, "-q": False, "-l": True, "-M": True, "-m": True, "-d": True,
        "-h": True, "-H": True, "-N": False, "-P": False, "-Y": False,
    },
    "unlock": {"-n": True, "-u": True, "-C": True, "-q": False},
}  # fmt: skip


def check_pw_argv(argv: list[str], root: str) -> dict[str, str | bool]:
    """Validate one recorded pw command; return its options. Raises AssertionError with the reason."""
    assert argv[:3] == ["pw", "-R", root], f"pw must start with -R rootdir: {argv}"
    verb = argv[3]
    assert verb in _SYNOPSIS, f"unknown pw command {verb!r}"
    allowed = _SYNOPSIS[verb]
    opts: dict[str, str | bool] = {}
    i = 4
    while i < len(argv):
        flag = argv[i]
        assert flag in allowed, f"pw {verb}: option {flag} is not in pw(8)'s synopsis ({argv})"
        assert flag not in opts, f"pw {verb}: {flag} given twice"
        if allowed[flag]:
            assert i + 1 < len(argv), f"pw {verb}: {flag} needs a value"
            opts[flag] = argv[i + 1]
            i += 2
        else:
            opts[flag] = True
            i += 1
    assert "-n" in opts or "-u" in opts, f"pw {verb}: names no account"
    if "-h" in opts and "-H" in opts:
        raise AssertionError("-h and -H are alternatives")
    if "-w" in opts:
        assert opts["-w"] in ("no", "yes", "none", "random")
    for fd_flag in ("-h", "-H"):
        if fd_flag in opts:
            assert str(opts[fd_flag]).isdigit() or opts[fd_flag] == "-"
    if "-M" in opts and verb == "useradd":
        assert "-m" in opts, "-M mode is only useful with -m"
        int(str(opts["-M"]), 8)
    return opts
