-- The server's own tables in cluster mode (PostgreSQL), beside the storage's concord_* tables.

-- Token keys and revocations, shared by every node: documents in the formats of the key file
-- (`{"keys": [...]}`) and of the revocation file (`{"tokens": [...], "principals": [...]}`).
CREATE TABLE concord_auth (
    name       TEXT        PRIMARY KEY,          -- 'keys' or 'revocations'
    value      TEXT        NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Live nodes: each node upserts its row every few seconds and deletes it when it stops.
CREATE TABLE concord_nodes (
    node         TEXT        PRIMARY KEY,
    incarnation  TEXT        NOT NULL,          -- random per process: tells restarts and twins apart
    region       TEXT        NOT NULL,
    addr         TEXT        NOT NULL,          -- the address it listens on
    version      TEXT        NOT NULL,
    started_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    heartbeat_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
