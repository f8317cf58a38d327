-- Runs newest first (every AOI, or one when :aoi_id is given) with their model,
-- AOI score and a summary of their validation results; params holds the sources' own
-- dates (source_steps) and, for a 'no_new_data' run, the run it matched (same_as_run).
SELECT r.id AS run_id,
       a.name AS aoi,
       r.step,
       r.status,
       r.trigger,
       r.external_id,
       r.started_at,
       r.finished_at,
       r.shards_total,
       r.error,
       r.params,
       mv.name AS model_name,
       mv.version AS model_version,
       sc.mean_qod AS qod,
       sc.n_tiles,
       v.n_suites,
       v.n_failed
FROM run r
JOIN aoi a ON a.id = r.aoi_id
LEFT JOIN model_version mv ON mv.id = r.model_version_id
LEFT JOIN aoi_score sc ON sc.run_id = r.id
LEFT JOIN (
    SELECT run_id,
           COUNT(*) AS n_suites,
           SUM(CASE WHEN success THEN 0 ELSE 1 END) AS n_failed
    FROM validation_result
    WHERE run_id IS NOT NULL
    GROUP BY run_id
) v ON v.run_id = r.id
WHERE CAST(:aoi_id AS INTEGER) IS NULL OR r.aoi_id = CAST(:aoi_id AS INTEGER)
ORDER BY r.started_at DESC, r.id DESC
LIMIT :limit
