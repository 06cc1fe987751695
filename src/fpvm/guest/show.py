"""``fpvm ignition show`` and ``fpvm guest plan``: what a config means for a FreeBSD guest.

Both are views of ``build_plan``: every action carries the JSON path of the config item it comes
from and its disposition (apply / translate / ignore), so the summary groups actions by item and no
mapping table is repeated here.
"""

from __future__ import annotations

import json
import re
import sys
from typing import TYPE_CHECKING, Any

from fpvm.guest.actions import Action
from fpvm.safetext import printable

if TYPE_CHECKING:
    from fpvm.ignition.model import Config, File

_ITEM = re.compile(r"^(\$\.[A-Za-z]+\.[A-Za-z]+(?:\[\d+\])?)")
_RANK = {"translate": 2, "apply": 1, "ignore": 0}
# Printed once at the top of ``show``: what the three marks mean.
LEGEND = (
    ("apply", "done as the config asks"),
    ("translate", "done the FreeBSD way (another path, rc.conf.d instead of systemd ...); how and why below"),
    ("ignore", "not done: Linux-only or not supported in the VM; why below"),
)
SECTIONS = ("users", "files", "directories", "links", "units", "devices", "kernel arguments")
# The reason of an item the plan has no action for.
NO_ACTION = "nothing to do on FreeBSD: the guest leaves it alone"


# Exit status when the config file cannot be read (missing, a directory, no permission): the same as
# ``fpvm ignition validate``'s; an invalid config is 1.
EXIT_UNREADABLE = 2


def _plan(config: Config, root: str | None, fetch_remote: bool) -> tuple[list[Action] | None, list[str]]:
    from fpvm.guest.plan import PlanError, PlanOptions, build_plan
    from fpvm.guest.rootfs import RootFS

    opts = PlanOptions(root=RootFS(root) if root else None, fetch_remote=fetch_remote)
    try:
        return build_plan(config, opts), []
    except PlanError as exc:
        return None, [f"{p}: {m}" for p, m in exc.problems]
    except ValueError as exc:
        return None, [str(exc)]


def _invalid(path: str, problems: list[str]) -> int:
    from fpvm.ignition.hints import hint

    print(f"{path}: invalid config:", file=sys.stderr)
    for p in problems:
        print(f"  {printable(p)}", file=sys.stderr)
        where, _, message = p.partition(": ")
        plain = hint(where, message) if where.startswith("$") else None
        if plain:
            print(f"    hint: {plain}", file=sys.stderr)
    return 1


def _decoded_size(file: File) -> str:
    from fpvm.guest.plan import PlanOptions, ResourceError, resource_bytes

    source = file.contents.source
    if source is None:
        return "no contents"
    try:
        data = resource_bytes(file.contents, PlanOptions(fetch_remote=False))
    except ResourceError as exc:
        return f"bad contents ({exc})"
    if data is None:
        return f"remote: {source.split('?', 1)[0]}"
    return f"{len(data)} bytes"


def _reason(action: Action) -> str:
    """An action's note; a setting in rc.conf.d says which one too (its description carries the note)."""
    return action.describe() if action.kind == "rcconf" else action.note


def summary(config: Config, actions: list[Action]) -> dict[str, list[dict[str, Any]]]:
    """Users, files, directories, links, units, devices and kernel arguments, each with its disposition."""
    from fpvm.guest.systemd import classify_unit

    items: dict[str, list[Action]] = {}  # config item ($.storage.files[3]) -> the actions it became
    for a in actions:
        if m := _ITEM.match(a.source):
            items.setdefault(m.group(1), []).append(a)

    def entry(where: str, classified: tuple[str, str] | None = None, **info: Any) -> dict[str, Any]:
        """One item: its disposition and the reasons (every translate and ignore has at least one)."""
        acts = items.get(where, [])
        disposition = max((a.disposition for a in acts), key=lambda d: _RANK[d], default="ignore")
        notes = sorted({_reason(a) for a in acts if a.note and a.note != info.get("name")})
        if classified is not None:  # a unit: the table's verdict, even when another unit acts for it
            kind, why = classified
            disposition = max(disposition, kind, key=lambda d: _RANK[d])
            notes = [why, *(n for n in notes if n != why)]
        if disposition == "translate":
            # What is done instead, for translate actions that carry no reason of their own.
            notes += [a.describe() for a in acts if a.disposition == "translate" and not a.note]
        if disposition == "ignore" and not notes:
            notes = [NO_ACTION]
        info["disposition"] = disposition
        if notes:
            info["notes"] = list(dict.fromkeys(notes))
        info["actions"] = [a.describe() for a in acts]
        return info

    out: dict[str, list[dict[str, Any]]] = {section: [] for section in SECTIONS}
    for i, u in enumerate(config.passwd.users):
        keys = [
            k.split()[0] + " …" + (k.split()[-1] if len(k.split()) > 2 else "") for k in u.ssh_authorized_keys
        ]
        out["users"].append(
            entry(
                f"$.passwd.users[{i}]",
                name=u.name,
                uid=u.uid,
                groups=list(u.groups),
                keys=keys,
                should_exist=u.should_exist is not False,
            )
        )
    for i, g in enumerate(config.passwd.groups):
        out["users"].append(entry(f"$.passwd.groups[{i}]", group=g.name, gid=g.gid))
    for i, f in enumerate(config.storage.files):
        out["files"].append(
            entry(f"$.storage.files[{i}]", path=f.path, size=_decoded_size(f), append=len(f.append))
        )
    for i, d in enumerate(config.storage.directories):
        out["directories"].append(entry(f"$.storage.directories[{i}]", path=d.path))
    for i, link in enumerate(config.storage.links):
        out["links"].append(
            entry(f"$.storage.links[{i}]", path=link.path, target=link.target, hard=bool(link.hard))
        )
    for i, unit in enumerate(config.systemd.units):
        state = "masked" if unit.mask else {True: "enabled", False: "disabled", None: ""}[unit.enabled]
        where = f"$.systemd.units[{i}]"
        out["units"].append(entry(where, classify_unit(unit, where), name=unit.name, state=state))
    st = config.storage
    for section, names in (
        ("disks", [d.device for d in st.disks]),
        ("raid", [r.name for r in st.raid]),
        ("filesystems", [f.device for f in st.filesystems]),
        ("luks", [lk.name for lk in st.luks]),
    ):
        for i, name in enumerate(names):
            out["devices"].append(entry(f"$.storage.{section}[{i}]", path=f"{section}: {name}"))
    kargs = config.kernel_arguments
    for key, values in (("shouldExist", kargs.should_exist), ("shouldNotExist", kargs.should_not_exist)):
        for arg in values:
            out["kernel arguments"].append(entry(f"$.kernelArguments.{key}", path=f"{key}: {arg}"))
    return out


def _label(item: dict[str, Any]) -> str:
    if "name" in item and "keys" in item:
        uid = f" uid {item['uid']}" if item.get("uid") is not None else ""
        groups = f" groups {','.join(item['groups'])}" if item.get("groups") else ""
        gone = "" if item["should_exist"] else " (remove)"
        keys = "; ".join(item["keys"]) or "no keys"
        return f"{item['name']}{uid}{groups}{gone}: {len(item['keys'])} key(s): {keys}"
    if "group" in item:
        return f"group {item['group']}" + (f" gid {item['gid']}" if item.get("gid") is not None else "")
    if "target" in item:
        return f"{item['path']} -> {item['target']}" + (" (hard)" if item["hard"] else "")
    if "size" in item:
        return f"{item['path']}  {item['size']}" + (f", {item['append']} append" if item["append"] else "")
    if "state" in item:
        return f"{item['name']}" + (f" ({item['state']})" if item["state"] else "")
    return str(item.get("path", ""))


def render(path: str, info: dict[str, list[dict[str, Any]]]) -> str:
    lines = [f"{path}: what a FreeBSD guest does with it"]
    lines += [f"  {mark:9}  {meaning}" for mark, meaning in LEGEND]
    for section, items in info.items():
        if not items:
            continue
        lines.append(f"{section.capitalize()}:")
        for item in items:
            lines.append(f"  [{item['disposition']:9}] {printable(_label(item))}")
            for note in item.get("notes", []):
                lines.append(f"               {printable(note)}")
    return "\n".join(lines)


def _load(path: str, root: str | None, fetch_remote: bool) -> tuple[Config, list[Action]] | int:
    """The config at ``path`` (``-``: stdin) and its plan, or the exit status after the message."""
    try:
        if path == "-":
            data = sys.stdin.buffer.read()
        else:
            with open(path, "rb") as fh:
                data = fh.read()
    except OSError as exc:
        print(f"{path}: cannot read: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_UNREADABLE
    from fpvm.guest.provision import load_config

    config, problems = load_config(data)
    if config is None:
        return _invalid(path, problems)
    actions, problems = _plan(config, root, fetch_remote)
    return (config, actions) if actions is not None else _invalid(path, problems)


def main(path: str, as_json: bool) -> int:
    """``fpvm ignition show FILE [--json]``; FILE ``-`` is standard input."""
    loaded = _load(path, None, fetch_remote=False)
    if isinstance(loaded, int):
        return loaded
    info = summary(*loaded)
    if as_json:
        print(json.dumps(info, indent=2))
    else:
        print(render(path, info))
    return 0


def plan_main(config_path: str, root: str | None, as_json: bool) -> int:
    """``fpvm guest plan --config FILE [--root DIR] [--json]``."""
    loaded = _load(config_path, root, fetch_remote=True)
    if isinstance(loaded, int):
        return loaded
    actions = loaded[1]
    if as_json:
        print(json.dumps([a.to_json() for a in actions], indent=2))
        return 0
    for a in actions:
        src = f"  ({a.source})" if a.source else ""
        print(printable(f"[{a.disposition:9}] {a.describe()}{src}"))
    return 0
