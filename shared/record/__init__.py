"""The job record (contract A4): its typed model, the state machine over it (pure functions), and the
one Firestore adapter that reads and writes records, transitions, the heartbeat and the meta collection."""
