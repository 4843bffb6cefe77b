"""Push ingestion: n8n workflows that run too long to answer a webhook POST their result.

`daily-index serve-ingest` verifies each push (Standard Webhooks signature), validates it
through the data contract and writes it durably to an inbox on the object store before it
answers 2xx; the `ingest_push_sensor` (daily_index/defs/ingest.py) turns every accepted push
into the KPI's materialisation for its day. docs/ingest.md explains the design.
"""
