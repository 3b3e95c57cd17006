-- Concord storage schema v2: the heads index region servers digest for anti-entropy.
CREATE TABLE doc_heads (
    doc   BLOB PRIMARY KEY,            -- 16-byte document id
    heads BLOB NOT NULL                -- committed heads, 32 bytes per change hash
) WITHOUT ROWID;
