"""Backend state: what each upstream's own endpoints say about it (models loaded, memory,
queues, KV cache, slots), read on the probe schedule and exposed as the catalog's llm_backend_*
family. One module per kind of backend (its endpoints and their parsers, exporter.backends.kinds
lists them), a store that renders the last good reads (state), and the loop that reads (collector).
"""
