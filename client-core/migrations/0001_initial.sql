-- Concord storage schema v1.
CREATE TABLE chunks (
    id   INTEGER PRIMARY KEY,          -- insertion order
    doc  BLOB    NOT NULL,             -- 16-byte document id
    key  BLOB    NOT NULL,             -- SHA-256 of data
    kind INTEGER NOT NULL,             -- 0 = incremental, 1 = snapshot
    data BLOB    NOT NULL,
    UNIQUE (doc, key)
);

CREATE TABLE sync_states (
    doc   BLOB NOT NULL,
    peer  TEXT NOT NULL,               -- the remote peer's storage id
    state BLOB NOT NULL,
    PRIMARY KEY (doc, peer)
) WITHOUT ROWID;

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value BLOB NOT NULL
) WITHOUT ROWID;
