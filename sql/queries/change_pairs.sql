-- The pairs of steps an AOI has changes for (from the run of each later step).
WITH step_run AS (
    SELECT step, MAX(id) AS run_id
    FROM run
    WHERE status = 'succeeded' AND aoi_id = :aoi_id
    GROUP BY step
)
SELECT c.step_from, c.step_to, sr.run_id, COUNT(*) AS n_changes
FROM change c
JOIN step_run sr ON sr.run_id = c.run_id
GROUP BY 1, 2, 3
ORDER BY 2 DESC, 1 DESC
