-- Protocol v2: entries are version 2 (a header names the group by its entry reference, and
-- lamport clocks are bounded per author). Nothing changes in the tables: entries of version
-- 1 cannot be re-signed by anyone but their authors, so a database holding them is refused
-- before this migration runs (schema.rs, `refuse_v1_entries`), never silently emptied.
SELECT 1;
