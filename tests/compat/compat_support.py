"""A recording runner that can also answer queries (sysctl, mount -p) like FreeBSD would."""

from __future__ import annotations

from collections.abc import Sequence

from fpvm.guest.runner import RecordingRunner, Result


class AnsweringRunner(RecordingRunner):
    """Records every argv; ``answers`` maps an argv tuple to the Result FreeBSD would give."""

    def __init__(self, answers: dict[tuple[str, ...], Result] | None = None) -> None:
        super().__init__(None)
        self.answers = dict(answers or {})

    def run(self, argv: Sequence[str], *, input: bytes | None = None, check: bool = True) -> Result:
        super().run(argv, input=input, check=check)
        result = self.answers.get(tuple(argv), Result(0))
        if check and not result.ok:
            from fpvm.guest.runner import CommandError

            raise CommandError(argv, result)
        return result


def sysctl_tags(*tags: str) -> Result:
    """What ``sysctl -e dev.virtio_p9fs`` prints with one virtio 9p device per tag."""
    lines = []
    for unit, tag in enumerate(tags):
        lines += [
            f"dev.virtio_p9fs.{unit}.p9fs_mount_tag={tag}",
            f"dev.virtio_p9fs.{unit}.%parent=virtio_pci{unit + 3}",
            f"dev.virtio_p9fs.{unit}.%desc=VirtIO 9P Transport",
        ]
    lines.append("dev.virtio_p9fs.%parent=")
    return Result(0, ("\n".join(lines) + "\n").encode())
