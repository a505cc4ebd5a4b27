-- Run once by the postgres image's entrypoint, on an empty data directory only
-- (docker-compose.yml mounts infra/postgres/init at /docker-entrypoint-initdb.d).
--
-- The warehouse database ($POSTGRES_DB) is created by the entrypoint itself; its tables
-- are created and migrated by ecom-ingest on first use (ecom_ingest_schema_version).
-- This adds Dagster's own storage (runs, event logs, schedules and sensors) beside it,
-- owned by the same role ($POSTGRES_USER, which runs this script). dagster-postgres
-- creates its tables on start-up. The name is the one ECOM_INGEST_DAGSTER_PG_URL uses
-- in docker-compose.yml.
CREATE DATABASE dagster;
