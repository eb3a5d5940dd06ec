"""Where a result came from: the command line as recorded in result metadata.

A leaf module (standard library only): the CLI, the tuner and the benchmark runner all import it.
"""

from __future__ import annotations

import os
import shlex
import sys


def command_line(argv: list[str] | None = None) -> str:
    """The command as run, for result metadata: ``ss1bench <args>``, each argument that is a path
    reduced to its file name (results travel between machines; their folders mean nothing there)."""
    args = list(sys.argv[1:] if argv is None else argv)

    def portable(arg: str) -> str:
        name, sep, value = arg.partition("=")
        if sep and os.sep in value:
            return f"{name}={os.path.basename(value.rstrip(os.sep))}"
        return os.path.basename(arg.rstrip(os.sep)) if os.sep in arg else arg

    return " ".join(["ss1bench", *(shlex.quote(portable(a)) for a in args)])
