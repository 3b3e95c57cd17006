-- Concord storage schema v1 on PostgreSQL (the SQLite schema's tables, prefixed so that they can
-- share a database with other applications). Several `concord serve` nodes use these tables at
-- once: every write is idempotent (chunk keys are the SHA-256 of their bytes).
CREATE TABLE concord_chunks (
    id   BIGINT   GENERATED ALWAYS AS IDENTITY PRIMARY KEY, -- insertion order
    doc  BYTEA    NOT NULL,                                 -- 16-byte document id
    key  BYTEA    NOT NULL,                                 -- SHA-256 of data
    kind SMALLINT NOT NULL,                                 -- 0 = incremental, 1 = snapshot
    data BYTEA    NOT NULL,
    UNIQUE (doc, key)
);

CREATE TABLE concord_sync_states (
    doc   BYTEA NOT NULL,
    peer  TEXT  NOT NULL,                                   -- the remote peer's storage id
    state BYTEA NOT NULL,
    PRIMARY KEY (doc, peer)
);

CREATE TABLE concord_meta (
    key   TEXT  PRIMARY KEY,
    value BYTEA NOT NULL
);

-- The heads index region servers digest for anti-entropy.
CREATE TABLE concord_doc_heads (
    doc   BYTEA PRIMARY KEY,                                -- 16-byte document id
    heads BYTEA NOT NULL                                    -- committed heads, 32 bytes per hash
);
