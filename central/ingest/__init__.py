"""Ingest: the lanes' ledgers committed exactly once, acks, and everything central signs
for the lanes (member states, snapshots, roster, rules, the downlink outbox).

``central.ingest.commit`` is the database side (tests call it without MQTT);
``central.ingest.worker.IngestWorker`` the MQTT side. Several workers may run against one
PostgreSQL: docs/central.md, Ingest.
"""
