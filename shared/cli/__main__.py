"""``python -m shared.cli`` runs ``batch-relay``."""

import sys

from . import main

sys.exit(main())
