-- A request log as the first version wrote it (schema version 1): fewer columns, no key ids,
-- no body capture, no meta table. tests/test_request_log.py opens a database made from this
-- file with the current exporter and checks that it gains the new columns and keeps its rows.
PRAGMA user_version = 1;
CREATE TABLE requests (
    ts REAL,
    request_id TEXT,
    upstream TEXT,
    api TEXT,
    model TEXT,
    stream INTEGER,
    status_code INTEGER,
    duration_seconds REAL,
    input_tokens INTEGER,
    output_tokens INTEGER,
    cost_usd REAL
);
CREATE INDEX idx_requests_ts ON requests (ts);
INSERT INTO requests VALUES (1700000000.0, 'v1-a', 'default', 'openai_chat', 'gpt-4o', 0, 200, 1.5, 100, 20, 0.00045);
INSERT INTO requests VALUES (1700000060.0, 'v1-b', 'default', 'openai_chat', 'gpt-4o', 1, 200, 2.5, 200, 40, 0.0009);
INSERT INTO requests VALUES (1700000120.0, 'v1-c', 'local', 'ollama_chat', 'llama3.2:1b', 1, 500, 0.5, NULL, NULL, NULL);
