"""batch-relay: Gemini API batches and Vertex AI batch prediction jobs as events on Pub/Sub.

``from batch_relay import track`` starts tracking a job from code that submits it, ``from batch_relay import wait``
blocks until one is done, ``from batch_relay import resubmit`` sends a job's failed requests again as a new batch.
Importing this package creates no client and reads no setting.

Layout: ``batchapi/`` (names, states, wire parsing, the REST client, quota), ``record/`` (the typed
record, its state machine, the Firestore adapter), ``events/`` (CloudEvents, publisher, outbox),
``poller/`` (one tick), ``reactor/`` (the copy, with its Cloud Storage client); beside them the
settings, errors, logs, the retry loop, credentials, the one wiring place, the entry points and the CLI.
"""

from .resubmits import resubmit
from .tracking import track, untrack
from .waiting import wait

__all__ = ["resubmit", "track", "untrack", "wait"]
