-- The reconciler's read-only access (docs/reconciler.md): it reads upload.* and search.* and writes
-- only its own schema `reconcile`. Run as the database owner after the services' first
-- start (their migrations create the schemas), and again after an upgrade that adds tables
-- (the ALTER DEFAULT PRIVILEGES below covers tables the owners create later).
--   psql "$ADMIN_URL" -v reconciler_password="'...'" -f deploy/postgres/reconciler-readonly.sql
-- Then give the reconciler's processes a DEPOT_DATABASE_URL with this role.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'depot_reconciler') THEN
        CREATE ROLE depot_reconciler LOGIN;
    END IF;
END
$$;
ALTER ROLE depot_reconciler PASSWORD :reconciler_password;
-- its own schema: runs, findings, its outbox
CREATE SCHEMA IF NOT EXISTS reconcile AUTHORIZATION depot_reconciler;
-- the owners' schemas: read only
GRANT USAGE ON SCHEMA upload, search TO depot_reconciler;
GRANT SELECT ON ALL TABLES IN SCHEMA upload, search TO depot_reconciler;
ALTER DEFAULT PRIVILEGES IN SCHEMA upload GRANT SELECT ON TABLES TO depot_reconciler;
ALTER DEFAULT PRIVILEGES IN SCHEMA search GRANT SELECT ON TABLES TO depot_reconciler;
REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA upload, search FROM depot_reconciler;
