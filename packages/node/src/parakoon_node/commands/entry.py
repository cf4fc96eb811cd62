"""The ``parakoon`` console script and ``python -m parakoon_node``.

The command line imports a good deal (anyio, structlog, the store, the WAL) before it parses a
single argument, which takes a noticeable moment on a busy machine. A Ctrl-C in that moment
used to print a long traceback from the middle of an import; here the imports happen inside
``main``, so it ends quietly with the shell's code for an interrupt instead.

One Ctrl-C can also arrive twice: ``uv run`` forwards the terminal's SIGINT to the command,
which got it already from the terminal. If the second copy lands after the command finished
(the launcher has stopped the cluster and put the default handler back), the command's own
exit code stands, and SIGINT is ignored for the last moments before the process exits.
"""

from __future__ import annotations

import signal

EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for Ctrl-C


def main() -> int:
    code = EXIT_INTERRUPTED
    try:
        from parakoon_node.commands.cli import main as cli_main

        code = cli_main()
    except KeyboardInterrupt:
        pass  # before the command finished: 130; after it: its own code (see above)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    return code
