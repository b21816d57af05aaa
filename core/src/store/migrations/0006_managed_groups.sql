-- Schema version 6: managed groups. A managed group remembers its creator (its first admin,
-- where the membership fold starts); a node remembers the invites it issued, by id, with only
-- a hash of each invite's secret; control entries (entry kind 1, the second byte of the
-- encoding) get an index of their own, so folding a group's membership reads only them.
ALTER TABLE groups ADD COLUMN creator BLOB CHECK (creator IS NULL OR length(creator) = 32);

CREATE TABLE invites (
    invite_id    BLOB PRIMARY KEY NOT NULL CHECK (length(invite_id) = 16),
    group_id     BLOB NOT NULL REFERENCES groups(group_id) ON DELETE CASCADE,
    secret_hash  BLOB NOT NULL CHECK (length(secret_hash) = 32),
    expires_ms   INTEGER NOT NULL,
    single_use   INTEGER NOT NULL,
    uses         INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

-- The control entries an invite's welcome brought, until sync stores them in their logs: the
-- joiner folds membership from them at once (they are verified before they are kept).
CREATE TABLE welcome_controls (
    group_id  BLOB NOT NULL REFERENCES groups(group_id) ON DELETE CASCADE,
    entry_id  BLOB NOT NULL CHECK (length(entry_id) = 32),
    raw       BLOB NOT NULL,
    PRIMARY KEY (group_id, entry_id)
) WITHOUT ROWID;

CREATE INDEX entries_control ON entries(group_id, cursor) WHERE substr(raw, 2, 1) = x'01';
