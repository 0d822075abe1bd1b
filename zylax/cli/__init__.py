"""The ``zylax`` command: train, compress, sensitivity, evaluate, inspect, export.

Argument parsing, validation and printing over the library: ``zylax.baseline``
(the model named, its cached baseline), ``zylax.presets`` (a preset with the
flags applied), ``zylax.compress``, ``zylax.modelfile`` and ``zylax.export``.
``arguments`` builds the parser, ``checks`` checks the arguments, ``sources``
finds the model, data and baseline a command runs on, and ``commands`` runs
each subcommand. Every argument is checked before any data is loaded or any training runs.
Errors are one line on stderr: exit code 2 for a bad argument, 1 for a
failure at run time (``ZYLAX_DEBUG=1`` shows the traceback instead).
"""

from __future__ import annotations

import os
import sys

from zylax import archive, hugepages
from zylax import data as zdata
from zylax.cli.arguments import build_parser
from zylax.cli.checks import UsageError

__all__ = ["UsageError", "build_parser", "main"]


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``zylax`` console script; exits 2 on usage errors, 1 on failures.

    Run as the ``zylax`` console script (no ``argv``), it first restarts itself
    with glibc's huge-page malloc (``zylax.hugepages``; BENCHMARKS.md, section
    10; ``ZYLAX_HUGEPAGES=0`` turns it off).
    """
    if argv is None and os.path.basename(sys.argv[0]) == "zylax":
        hugepages.restart_tuned()
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # the command's own help lists what it takes
        parser.commands[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        args.func(args)
    except BrokenPipeError:  # `zylax inspect FILE | head`
        sys.stderr.close()
        os._exit(0)
    except UsageError as err:
        parser.exit(2, f"zylax {args.command}: error: {err}\n")
    except Exception as err:  # noqa: BLE001 - every failure is one line (ZYLAX_DEBUG=1: traceback)
        if os.environ.get("ZYLAX_DEBUG") == "1":
            raise
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        if isinstance(err, OSError) and err.filename and err.strerror:
            message = f"{err.filename}: {err.strerror}"
        elif not isinstance(err, (archive.CorruptFileError, zdata.DatasetNotFoundError,
                                  RuntimeError, ValueError, OSError)):
            message = f"{type(err).__name__}: {message} (ZYLAX_DEBUG=1 shows the traceback)"
        parser.exit(1, f"zylax {args.command}: {message[:1000]}\n")


if __name__ == "__main__":
    main(sys.argv[1:])
