-- The changes of one AOI from :step_from to :step_to (the run of :step_to), largest first.
WITH to_run AS (
    SELECT MAX(id) AS run_id
    FROM run
    WHERE status = 'succeeded' AND aoi_id = :aoi_id AND step = :step_to
)
SELECT c.id AS change_id, c.kind, c.feature_id, c.area_m2, c.confidence, c.step_from,
       c.step_to, c.run_id, c.geometry
FROM change c
JOIN to_run tr ON tr.run_id = c.run_id
WHERE c.step_from = :step_from
ORDER BY c.area_m2 DESC, c.id
