-- Validation results of one run (and of the snapshots it used), newest first.
SELECT v.id, v.suite, v.severity, v.success, v.statistics, v.failed, v.created_at
FROM validation_result v
JOIN run r ON r.id = :run_id
WHERE v.run_id = r.id
   OR v.snapshot_id IN (r.imagery_snapshot_id, r.opendata_snapshot_id)
ORDER BY v.created_at DESC, v.id DESC
