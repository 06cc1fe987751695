"""``--help`` of every command and subcommand, found by walking the parser tree ``fpvm.cli`` builds.

A new subcommand is covered without touching this file. Commands that pass their words on untouched
(``guest shim|ready|boot``) are reached through their ``argv_parser`` (see ``fpvm.cli``).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

from fpvm import cli
from fpvm_runner import run_fpvm


def _children(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            # choices maps every name (aliases too) to its parser; each parser once, under its first name.
            seen: set[int] = set()
            for name, child in action.choices.items():
                if id(child) not in seen:
                    seen.add(id(child))
                    yield name, child


def walk(
    parser: argparse.ArgumentParser, words: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every (command words, parser) pair under ``parser``, passthrough commands included."""
    inner = parser.get_default("argv_parser")
    if inner is not None:
        yield from walk(inner(), words)
        return
    yield words, parser
    for name, child in _children(parser):
        yield from walk(child, (*words, name))


COMMANDS = [words for words, _ in walk(cli.build_parser())]


def test_the_walk_finds_every_area() -> None:
    tops = {words[0] for words in COMMANDS if words}
    assert set(cli.COMMANDS) <= tops
    # passthrough commands and their own subcommands are reached
    for words in [("guest", "shim"), ("guest", "shim", "mount"), ("guest", "ready"), ("guest", "boot")]:
        assert words in COMMANDS
    assert ("build",) in COMMANDS and ("machine", "init") in COMMANDS
    assert len(COMMANDS) > 30


@pytest.mark.parametrize("words", COMMANDS, ids=lambda w: " ".join(w) or "fpvm")
def test_help_renders(words: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    """Through the real entry point: usage on stdout, exit 0, no argparse internals leaking out."""
    try:
        status = cli.main([*words, "--help"])
    except SystemExit as exc:
        status = exc.code
    out, err = capsys.readouterr()
    assert status in (0, None), err
    prog = " ".join(("fpvm", *words))
    assert out.startswith(f"usage: {prog} "), out[:200]
    # A bare % in a help string makes argparse print its internal dictionary (or fail).
    for leak in ("'option_strings'", "%(", "Traceback", "==SUPPRESS=="):
        assert leak not in out + err
    assert err == ""


def _options() -> Iterator[tuple[str, argparse.Action]]:
    for words, parser in walk(cli.build_parser()):
        for action in parser._actions:
            if action.option_strings and action.help != argparse.SUPPRESS:
                yield " ".join(("fpvm", *words, action.option_strings[-1])), action


OPTIONS = list(_options())


def _mentions(text: str, default: object) -> bool:
    """Whether an expanded help text states ``default`` (sizes may be written as 4g, floats as 300)."""
    forms = {str(default)}
    if isinstance(default, float) and default.is_integer():
        forms.add(str(int(default)))
    if isinstance(default, int) and not isinstance(default, bool):
        for unit, scale in (("k", 1 << 10), ("m", 1 << 20), ("g", 1 << 30), ("t", 1 << 40)):
            if default >= scale and default % scale == 0:
                forms.add(f"{default // scale}{unit}")
    return "default" in text and any(form in text for form in forms)


@pytest.mark.parametrize(("name", "action"), OPTIONS, ids=[name for name, _ in OPTIONS])
def test_every_option_says_what_it_does_and_its_default(name: str, action: argparse.Action) -> None:
    assert action.help and action.help.strip(), f"{name} has no help text"
    default = action.default
    if default is None or default is False or default == argparse.SUPPRESS or default == []:
        return
    # argparse expands %(default)s and friends when it renders help
    params = {**vars(action), "default": default, "prog": "fpvm"}
    if action.choices is not None:
        params["choices"] = ", ".join(map(str, action.choices))
    text = action.help % params
    assert _mentions(text, default), f"{name}: help {text!r} does not mention its default {default!r}"


def test_options_found() -> None:
    names = {name for name, _ in OPTIONS}
    assert {"fpvm build --zstd-level", "fpvm machine init --cpus", "fpvm guest ready --ssh-port"} <= names
    assert "fpvm guest shim --root" in names


@pytest.mark.parametrize(
    "argv",
    [["build", "--help"], ["guest", "shim", "--help"], ["guest", "shim", "systemctl", "--help"]],
)
def test_help_through_the_installed_command(argv: list[str]) -> None:
    res = run_fpvm(*argv, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("usage: fpvm ") and "'option_strings'" not in res.stdout
    assert res.stderr == ""


def test_shim_help_lists_every_shim() -> None:
    from fpvm.guest.compat import COMMANDS as SHIMS

    res = run_fpvm("guest", "shim", "-h", timeout=60)
    assert res.returncode == 0
    assert set(SHIMS) == {"mount", "chattr", "systemctl", "systemd-tmpfiles"}
    for shim in SHIMS:
        assert f"    {shim}" in res.stdout


def test_shim_name_help_says_what_it_does(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["guest", "shim", "--root", "/nonexistent", "chattr", "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: fpvm guest shim chattr")
    assert "immutable" in out and "``" not in out
