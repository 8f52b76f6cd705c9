"""Events (contract A5): CloudEvents built from the record, the ordered publisher, and the outbox that
publishes what the record holds unpublished. ``schemas/`` has a JSON Schema per event type."""
