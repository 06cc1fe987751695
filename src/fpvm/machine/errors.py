"""The one exception type of the host launcher.

Every failure a user can cause or fix (bad image, busy port, missing QEMU...) is raised as a
MachineError whose text is the whole message: the CLI prints it as is, never a traceback.
"""

from __future__ import annotations


class MachineError(Exception):
    """A problem the user can act on; ``str(exc)`` says what is wrong and what to do."""
