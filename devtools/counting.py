"""A ``JobStore`` that counts the Firestore documents it reads and writes: the benchmarks' and the cost
report's meter (one class, so that they all count the same way).

- ``record_reads``: job records and their transitions (the due queries, the outbox and sweep queries,
  the watched-scope reconciles, gets, the read inside each transaction, the transitions read back);
- ``meta_reads``: bookkeeping documents (a scope's digest parts and state, the scopes, the schema,
  untrack tombstones, the heartbeats of a fan-out's parts — each read's parts also in ``part_reads``);
- ``empty``: queries that returned nothing: Firestore bills each as one read, a cost of the tick rather
  than of any job, so they are kept apart from the document counts;
- ``writes``: documents written (a record and its transitions, slot steps, heartbeats, digest parts,
  scope bookkeeping).
"""

from __future__ import annotations

from batch_relay.record import machine
from batch_relay.record.store import JobStore


class CountingStore(JobStore):
    def __init__(self, db, settings) -> None:
        super().__init__(db, settings)
        self.reset()

    def reset(self) -> None:
        self.record_reads = self.meta_reads = self.writes = self.empty = 0
        self.part_reads: list[list[int]] = []  # the parts each read of part heartbeats asked for

    @property
    def reads(self) -> int:
        return self.record_reads + self.meta_reads

    def _counted(self, docs):
        n = 0
        for item in docs:
            n += 1
            yield item
        self.record_reads += n
        self.empty += n == 0

    # -- record reads ---------------------------------------------------------------------------------------
    def _due_range(self, *args, **kw):  # each query of the tick's due records (one per slot and range)
        yield from self._counted(super()._due_range(*args, **kw))

    def unpublished(self):
        yield from self._counted(super().unpublished())

    def _copying(self):
        yield from self._counted(super()._copying())

    def watched(self, scope_id, part=None):
        yield from self._counted(super().watched(scope_id, part))

    def snapshots(self, names):
        self.record_reads += len(names)
        return super().snapshots(names)

    def snapshot(self, name):
        self.record_reads += 1
        return super().snapshot(name)

    def pending_events(self, record):
        self.record_reads += len(machine.unpublished_versions(record))  # the transitions, read back
        return super().pending_events(record)

    def _transact(self, name, step):
        self.record_reads += 1
        return super()._transact(name, step)

    # -- bookkeeping reads ----------------------------------------------------------------------------------
    def tombstoned(self, names):
        self.meta_reads += len(names)
        return super().tombstoned(names)

    def load_digest(self, scope_id):
        digest = super().load_digest(scope_id)
        self.meta_reads += len(digest.parts)
        return digest

    def load_scope(self, scope_id):
        self.meta_reads += 1
        return super().load_scope(scope_id)

    def known_scopes(self):
        found = super().known_scopes()
        self.meta_reads += len(found)
        self.empty += not found
        return found

    def migrated(self, ladder):
        self.meta_reads += 1
        return super().migrated(ladder)

    def part_heartbeats(self, tick, parts):
        parts = list(parts)
        self.meta_reads += len(parts)
        self.part_reads.append(parts)
        return super().part_heartbeats(tick, parts)

    # -- writes ---------------------------------------------------------------------------------------------
    def _write(self, writer, name, before, change, option=None):
        self.writes += 1 + len(change.transitions)
        return super()._write(writer, name, before, change, option)

    def set_slot(self, snap, slot):
        self.writes += 1
        return super().set_slot(snap, slot)

    def heartbeat(self, summary, now, part=None, tick=None):
        self.writes += 1
        return super().heartbeat(summary, now, part, tick)

    def save_digest(self, dig):
        written = super().save_digest(dig)
        self.writes += written
        return written

    def save_scope(self, scope_id, fields):
        self.writes += 1
        return super().save_scope(scope_id, fields)
