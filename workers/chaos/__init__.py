"""``streamscore chaos``: fault injection against the local real broker and Redis, counted.

Each scenario sends events, injects its fault (kill -9, broker or Redis outage, rebalances, bad
input), then reads the decision and dead-letter topics back and counts, per input message
(partition, offset), lost, duplicated and contradictory outcomes (``ledger``). Results print as a
table and JSON (``report``).
"""
