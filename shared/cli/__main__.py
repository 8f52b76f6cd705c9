"""``python -m batch_relay.cli`` runs ``batch-relay``."""

import sys

from . import main

sys.exit(main())
