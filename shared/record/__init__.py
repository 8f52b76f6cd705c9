"""The job record (contract A4): its typed model, the state machine over it (pure functions returning an
``Outcome``), and the store (``JobStore``, ``store.py`` and its parts): the only modules that read or
write Firestore — records, transitions, the heartbeat and the meta collection."""
