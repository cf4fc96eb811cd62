"""``python -m parakoon_node ...`` is the ``parakoon`` command (the launcher starts nodes so)."""

import sys

from parakoon_node.commands.entry import main

sys.exit(main())
