-- Log chunks are large text values (a full batch is 4 MiB). LZ4 stores and reads them several
-- times faster than PostgreSQL's default pglz (docs/performance.md, "Engine core"), so it is the
-- column's compression. A server built without LZ4 keeps the default.
DO $$
BEGIN
    ALTER TABLE log_chunks ALTER COLUMN data SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported OR invalid_parameter_value THEN
    RAISE NOTICE 'LZ4 is not available on this server; log chunks keep the default compression';
END $$;
