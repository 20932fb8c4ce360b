-- SQLite serves one process, whose typing and presence positions are its
-- own (syncstream's clock): nothing is shared.
SELECT 1;
