-- The checks are the registry in depot_reconciler/checks (one module each), not a list in
-- the schema: adding a check must not need a migration. reconcile.audit already takes any class.
ALTER TABLE reconcile.findings DROP CONSTRAINT findings_class_check;
