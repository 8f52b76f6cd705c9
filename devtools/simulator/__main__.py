"""``python -m devtools.simulator --port N [--host 127.0.0.1] [--latency-ms X] [--api-key K] [--seed S]``."""

import sys

from devtools.simulator.server import main

sys.exit(main())
