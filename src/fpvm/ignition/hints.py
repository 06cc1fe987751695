"""Plain-language restatements of upstream messages that name Go internals.

Findings keep upstream Ignition's exact wording (``json: cannot unmarshal array into Go value of type
util.versionStub``): the recorded agreement tests compare it, and people search the web for it. What a
user reads next to it comes from ``hint``: one sentence without Go types. It is derived from the
message alone, so every producer of such messages is covered and the report itself is unchanged.
"""

from __future__ import annotations

import re

# json: cannot unmarshal KIND [VALUE] into (Go value of type T | Go struct field F of type T | F of type T)
_UNMARSHAL = re.compile(
    r"^json: cannot unmarshal (?P<kind>\w+)(?: (?P<value>\S+))? into "
    r"(?:Go value of type (?P<top>\S+)|(?:Go struct field )?\S+ of type (?P<type>.+))$"
)
# Go's named string types in spec packages (types.SSHAuthorizedKey ...): JSON strings.
_STRING_TYPES = frozenset(
    {
        "types.Group",
        "types.SSHAuthorizedKey",
        "types.Device",
        "types.NoProxyItem",
        "types.MountOption",
        "types.OpenOption",
        "types.KernelArgument",
    }
)
_ARTICLE = {
    "array": "an array",
    "object": "an object",
    "number": "a number",
    "string": "a string",
    "bool": "a boolean",
}


def _expected(gotype: str) -> str:
    """What a Go type means in JSON terms."""
    if gotype.startswith("[]"):
        return "a list (JSON array)"
    if gotype in ("string", "*string") or gotype in _STRING_TYPES:
        return "a string"
    if gotype in ("bool", "*bool"):
        return "true or false"
    if gotype in ("int", "*int"):
        return "a whole number"
    return "a JSON object"


def hint(path: str, message: str) -> str | None:
    """A plain sentence for ``message`` at ``path``, or None when the message is plain already."""
    m = _UNMARSHAL.match(message)
    if m is not None:
        given = _ARTICLE.get(m["kind"], m["kind"])
        if m["top"] is not None or path == "$":
            return f"the config must be a JSON object, not {given}"
        expected = _expected(m["type"])
        if m["value"] is not None and expected == "a whole number":
            return f"{path} must be a whole number (64-bit), not {m['value']}"
        return f"{path} must be {expected}, not {given}"
    if path == "$" and message.startswith(("invalid character '", "unexpected end of JSON input")):
        return "the config is not valid JSON"
    return None
