-- Concord storage schema v3: document lifecycle and accountability.

-- Deleted documents (the core's encoding: who, when). Outlives the document's chunks.
CREATE TABLE tombstones (
    doc    BLOB PRIMARY KEY,           -- 16-byte document id
    record BLOB NOT NULL
) WITHOUT ROWID;

-- Who wrote each change, as the committing server saw its token (first author wins).
CREATE TABLE change_authors (
    doc       BLOB    NOT NULL,
    hash      BLOB    NOT NULL,        -- 32-byte change hash
    principal TEXT    NOT NULL,
    at_ms     INTEGER NOT NULL,        -- Unix milliseconds
    PRIMARY KEY (doc, hash)
) WITHOUT ROWID;

-- The documents each principal created; `id` is the paging cursor (only grows).
CREATE TABLE owned_docs (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    principal TEXT NOT NULL,
    doc       BLOB NOT NULL,
    UNIQUE (principal, doc)
);
CREATE INDEX owned_docs_by_doc ON owned_docs (doc);

-- When each sync state was last written (Unix milliseconds), to expire abandoned ones.
ALTER TABLE sync_states ADD COLUMN updated_at INTEGER NOT NULL DEFAULT 0;
