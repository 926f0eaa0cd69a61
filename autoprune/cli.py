"""``autoprune`` console script: registers every module of :mod:`autoprune.commands`."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from . import commands
from ._version import __version__
from .errors import AutopruneError

ORDER = ["search", "worker", "report", "apply", "profile", "gpus", "demo", "analyze"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autoprune",
        description="Search, report and apply visual-token reduction schedules for hybrid long-video VLMs.",
    )
    parser.add_argument("--version", action="version", version=f"autoprune {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    names = [m.name for m in pkgutil.iter_modules(commands.__path__) if not m.name.startswith("_")]
    for name in sorted(names, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n)):
        importlib.import_module(f"{commands.__name__}.{name}").register(sub)
    return parser


# Flags whose value may start with "-" (a negative budget is refused by its own parser, with a message
# that says why, instead of argparse's "expected one argument").
VALUE_FLAGS = ("--budget",)


def join_dash_values(argv: list[str]) -> list[str]:
    """``--budget -3ms`` → ``--budget=-3ms`` for the flags of :data:`VALUE_FLAGS`."""
    out, i = [], 0
    while i < len(argv):
        a = argv[i]
        if a in VALUE_FLAGS and i + 1 < len(argv) and argv[i + 1].startswith("-") and not argv[i + 1].startswith("--"):
            out.append(f"{a}={argv[i + 1]}")
            i += 2
            continue
        out.append(a)
        i += 1
    return out


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(join_dash_values(list(sys.argv[1:] if argv is None else argv)))
    try:
        return int(args.func(args) or 0)
    except AutopruneError as e:
        print(f"autoprune {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"autoprune {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
