"""``sdstudio <command>``: headless generation over core + engine.

Every error a person can cause ends with one line on stderr and a non-zero exit; ``--verbose``
adds the traceback for bug reports.
"""

from __future__ import annotations

import logging
import sys

from sdstudio.cli.generate import _generate
from sdstudio.cli.info import _info
from sdstudio.cli.parser import FILL_METHODS, build_parser
from sdstudio.cli.restore import _restore
from sdstudio.cli.select import _select
from sdstudio.cli.upscale import _upscale
from sdstudio.core.errors import SDStudioError
from sdstudio.core.request import Mode

__all__ = ["COMMANDS", "FILL_METHODS", "build_parser", "main"]

log = logging.getLogger("sdstudio")

COMMANDS = ("inpaint", "img2img", "txt2img", "remove", "restore", "select", "upscale", "info")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or (len(argv) == 1 and argv[0] not in COMMANDS and not argv[0].startswith("-")):
        from sdstudio.app import main as gui  # `sdstudio` or `sdstudio IMAGE`: the editor

        return gui(argv[0] if argv else None)
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if args.command is None:
        parser.print_help()
        return 0
    try:
        if args.command == "info":
            return _info(args)
        if args.command == "restore":
            return _restore(args)
        if args.command == "select":
            return _select(args)
        if args.command == "upscale":
            return _upscale(args)
        return _generate(args, Mode(args.command))
    except KeyboardInterrupt:
        print("\nCancelled.", file=sys.stderr)
        return 130
    except SDStudioError as error:
        log.debug("error", exc_info=True)
        print(f"sdstudio: error: {error}", file=sys.stderr)
        return 1
    except Exception as error:  # noqa: BLE001 - one line for the person, the trace with -v
        if args.verbose:
            log.exception("unexpected error")
        print(
            f"sdstudio: error: {type(error).__name__}: {error} (run with --verbose for details)",
            file=sys.stderr,
        )
        return 1
