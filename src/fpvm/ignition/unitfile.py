"""Reading systemd unit text the way upstream Ignition's validation does (go-systemd's ``unit`` lexer).

Ignition rejects a unit or drop-in whose contents this lexer cannot read ("invalid unit content: ...")
and warns when an enabled unit has no ``[Install]`` option. The lexer reads through a 4096-byte
buffered reader and refuses a line once 2048 buffered bytes hold no newline; that depends on how the
buffer happens to be filled, so the buffer is modelled too, to reject exactly the same texts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fpvm.ignition.gocompat import go_quote
from fpvm.ignition.records import dataclass, field

_BUF = 4096
_LINE_MAX = 2048
_UNICODE_SPACES = {0x85, 0xA0, 0x1680, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000, *range(0x2000, 0x200B)}


def go_isspace(r: int) -> bool:
    """Go's ``unicode.IsSpace``."""
    return r in (0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x20) or r in _UNICODE_SPACES


def _trim_space(b: bytes) -> bytes:
    text = b.decode("utf-8", "replace")
    start, end = 0, len(text)
    while start < end and go_isspace(ord(text[start])):
        start += 1
    while end > start and go_isspace(ord(text[end - 1])):
        end -= 1
    return text[start:end].encode("utf-8")


Step = Callable[[], Any]  # a lexer state: returns the next state, or None at the end


class UnitSyntaxError(Exception):
    pass


def _full_rune(x: bytes) -> bool:
    if not x:
        return False
    lead = x[0]
    if lead < 0x80:
        return True
    need = 2 if 0xC2 <= lead <= 0xDF else 3 if 0xE0 <= lead <= 0xEF else 4 if 0xF0 <= lead <= 0xF4 else 1
    if len(x) >= need:
        return True
    return any(not 0x80 <= c <= 0xBF for c in x[1:])


@dataclass
class _Reader:
    """bufio.Reader over a strings.Reader: only the positions matter, so only they are kept."""

    data: bytes
    pos: int = 0
    end: int = 0  # absolute offset of the end of the buffered bytes
    last_width: int = 0

    def fill(self) -> None:
        self.end = min(len(self.data), self.pos + _BUF)

    def buffered(self) -> int:
        return self.end - self.pos

    def read_rune(self) -> int | None:
        if (
            self.pos + 4 > self.end
            and not _full_rune(self.data[self.pos : self.end])
            and self.end < len(self.data)
        ):
            self.fill()
        if self.pos >= self.end:
            return None
        chunk = self.data[self.pos : min(self.end, self.pos + 4)]
        lead = chunk[0]
        if lead < 0x80:
            width, rune = 1, lead
        else:
            for width in (4, 3, 2):
                try:
                    rune = ord(chunk[:width].decode("utf-8"))
                    break
                except (UnicodeDecodeError, TypeError):
                    continue
            else:
                width, rune = 1, 0xFFFD
        self.pos += width
        self.last_width = width
        return rune

    def unread_rune(self) -> None:
        self.pos -= self.last_width

    def read_bytes(self, delim: int) -> tuple[bytes, bool]:
        """Up to and including ``delim``; the flag says EOF came first."""
        start = self.pos
        searched = self.pos
        eof_seen = False
        while True:
            i = self.data.find(bytes([delim]), searched, self.end)
            if i >= 0:
                self.pos = i + 1
                return self.data[start : self.pos], False
            searched = self.end
            if eof_seen:
                self.pos = self.end
                return self.data[start : self.pos], True
            if self.buffered() >= _BUF:
                self.pos = self.end  # ErrBufferFull: ReadBytes keeps the chunk and reads on
            if self.end >= len(self.data):
                eof_seen = True
                continue
            self.fill()

    def to_eol(self) -> tuple[bytes, bool]:
        line, eof = self.read_bytes(0x0A)
        line = line.removesuffix(b"\r").removesuffix(b"\n")
        return line, eof


@dataclass
class Option:
    section: str
    name: str
    value: str


@dataclass
class _Lexer:
    r: _Reader
    options: list[Option] = field(default_factory=list)

    def run(self) -> None:
        step: Step | None = self.next_section
        while step is not None:
            if self.r.buffered() >= _LINE_MAX:
                peek = self.r.data[self.r.pos : self.r.pos + _LINE_MAX]
                if b"\r" not in peek and b"\n" not in peek:
                    raise UnitSyntaxError(f"line too long (max {_LINE_MAX} bytes)")
            step = step()

    def next_section(self) -> Step | None:
        c = self.r.read_rune()
        if c is None:
            return None
        if c == ord("["):
            return self.section_name
        if c in (ord("#"), ord(";")):
            return self.ignore_line(self.next_section)
        return self.next_section

    def section_name(self) -> Step | None:
        sec, eof = self.r.read_bytes(ord("]"))
        if eof:
            raise UnitSyntaxError("unable to find end of section")
        name = sec[:-1].decode("utf-8", "replace")

        def suffix() -> Step | None:
            garbage, _ = self.r.to_eol()
            garbage = _trim_space(garbage)
            if garbage:
                text = garbage.decode("utf-8", "replace")
                raise UnitSyntaxError(f"found garbage after section name : {go_quote(text)}")
            return self.section_or_option(name)

        return suffix

    def ignore_line(self, then: Step) -> Step:
        def step() -> Step | None:
            while True:
                line, _ = self.r.to_eol()
                if not line.removesuffix(b" ").endswith(b"\\"):
                    return then

        return step

    def section_or_option(self, section: str) -> Step:
        def step() -> Step | None:
            c = self.r.read_rune()
            if c is None:
                return None
            if go_isspace(c):
                return self.section_or_option(section)
            if c == ord("["):
                return self.section_name
            if c in (ord("#"), ord(";")):
                return self.ignore_line(self.section_or_option(section))
            self.r.unread_rune()
            return self.option_name(section)

        return step

    def option_name(self, section: str) -> Step:
        def step() -> Step | None:
            name = bytearray()
            while True:
                c = self.r.read_rune()
                if c is None:
                    raise UnitSyntaxError("EOF")
                if c in (0x0A, 0x0D):
                    raise UnitSyntaxError("unexpected newline encountered while parsing option name")
                if c == ord("="):
                    break
                name += chr(c).encode("utf-8", "surrogatepass")
            return self.option_value(section, _trim_space(bytes(name)).decode("utf-8", "replace"), b"")

        return step

    def option_value(self, section: str, name: str, partial: bytes) -> Step:
        def step() -> Step | None:
            line, eof = self.r.to_eol()
            value = partial
            if _trim_space(line):
                value += line
                if line.endswith(b"\\"):
                    if not eof:
                        value += b"\n"
                    return self.option_value(section, name, value)
            text = value.decode("utf-8", "replace")
            self.options.append(Option(section, name, text.strip()))
            return self.section_or_option(section)

        return step


def parse_unit(contents: str | None) -> list[Option]:
    """The options of a unit text; raises ``UnitSyntaxError`` where go-systemd fails."""
    if contents is None:
        return []
    lexer = _Lexer(_Reader(contents.encode("utf-8", "surrogatepass")))
    lexer.run()
    return lexer.options


def unit_error(contents: str | None) -> str | None:
    """Upstream's message for unreadable unit text, or ``None``."""
    try:
        parse_unit(contents)
    except UnitSyntaxError as exc:
        return f"invalid unit content: {exc}"
    return None


def has_install_section(options: list[Option]) -> bool:
    return any(o.section == "Install" for o in options)
