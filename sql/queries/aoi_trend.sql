-- Quality measures per audited step (the run of each step), with the model that
-- produced them; every AOI, or one when :aoi_id is given.
WITH step_run AS (
    SELECT aoi_id, step, MAX(id) AS run_id
    FROM run
    WHERE status = 'succeeded'
      AND (CAST(:aoi_id AS INTEGER) IS NULL OR aoi_id = CAST(:aoi_id AS INTEGER))
    GROUP BY aoi_id, step
)
SELECT sr.aoi_id,
       a.name AS aoi,
       sr.step,
       sr.run_id,
       sc.completeness,
       sc.correctness,
       sc.mean_iou,
       sc.mean_qod,
       sc.flagged_tile_share,
       sc.n_tiles,
       sc.n_opendata,
       sc.n_predicted,
       mv.name AS model_name,
       mv.version AS model_version
FROM step_run sr
JOIN aoi a ON a.id = sr.aoi_id
JOIN aoi_score sc ON sc.run_id = sr.run_id
LEFT JOIN model_version mv ON mv.id = sc.model_version_id
ORDER BY a.name, sr.step
