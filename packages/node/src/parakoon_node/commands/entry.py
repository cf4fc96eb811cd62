"""The ``parakoon`` console script and ``python -m parakoon_node``.

The command line imports a good deal (anyio, structlog, the store, the WAL) before it parses a
single argument, which takes a noticeable moment on a busy machine. A Ctrl-C in that moment
used to print a long traceback from the middle of an import; here the imports happen inside
``main``, so it ends quietly with the shell's code for an interrupt instead.
"""

from __future__ import annotations

EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for Ctrl-C


def main() -> int:
    try:
        from parakoon_node.commands.cli import main as cli_main

        return cli_main()
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
