-- Placeholder on the fedinfra branch for the migration another branch adds
-- with this number; dropped at merge.
SELECT 1;
