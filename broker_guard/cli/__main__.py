"""``python -m broker_guard COMMAND``: the operator's command line, as ``broker-guard``."""

import sys

from broker_guard.cli import main

sys.exit(main())
