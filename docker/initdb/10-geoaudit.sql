-- Runs once when the PostGIS volume is created: GeoAudit's database gets PostGIS
-- (its tables come from `geoaudit init`, i.e. the Alembic migrations in sql/),
-- and Airflow gets its own metadata database on the same server.
\connect geoaudit
CREATE EXTENSION IF NOT EXISTS postgis;
CREATE DATABASE airflow;
