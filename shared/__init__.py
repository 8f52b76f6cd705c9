"""batch-relay: Gemini API batches and Vertex AI batch prediction jobs as events on Pub/Sub.

``from shared import track`` starts tracking a job from code that submits it. Importing this package
creates no client and reads no setting.
"""

from .tracking import track, untrack

__all__ = ["track", "untrack"]
