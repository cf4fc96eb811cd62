"""``python -m parakoon_node ...`` is the ``parakoon`` command (the launcher starts nodes so)."""

import sys

try:
    from parakoon_node.commands.entry import main
except KeyboardInterrupt:
    # Ctrl-C while the command is still importing: quiet, with the shell's code for SIGINT
    # (``main`` handles it from there on).
    sys.exit(130)

sys.exit(main())
