-- Concord storage schema v2 on PostgreSQL: document lifecycle and accountability.

-- Deleted documents (the core's encoding: who, when). Outlives the document's chunks.
CREATE TABLE concord_tombstones (
    doc    BYTEA PRIMARY KEY,                               -- 16-byte document id
    record BYTEA NOT NULL
);

-- Who wrote each change, as the committing node saw its token (first author wins).
CREATE TABLE concord_change_authors (
    doc       BYTEA  NOT NULL,
    hash      BYTEA  NOT NULL,                              -- 32-byte change hash
    principal TEXT   NOT NULL,
    at_ms     BIGINT NOT NULL,                              -- Unix milliseconds
    PRIMARY KEY (doc, hash)
);

-- The documents each principal created; `id` is the paging cursor (only grows).
CREATE TABLE concord_owned_docs (
    id        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    principal TEXT   NOT NULL,
    doc       BYTEA  NOT NULL,
    UNIQUE (principal, doc)
);
CREATE INDEX concord_owned_docs_by_doc ON concord_owned_docs (doc);

-- When each sync state was last written, to expire abandoned ones.
ALTER TABLE concord_sync_states
    ADD COLUMN updated_at TIMESTAMPTZ NOT NULL DEFAULT now();
