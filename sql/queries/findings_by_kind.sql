-- Findings per kind at every audited step of one AOI.
WITH step_run AS (
    SELECT step, MAX(id) AS run_id
    FROM run
    WHERE status = 'succeeded' AND aoi_id = :aoi_id
    GROUP BY step
)
SELECT sr.step, f.kind, COUNT(*) AS n
FROM step_run sr
JOIN finding f ON f.run_id = sr.run_id
GROUP BY 1, 2
ORDER BY 1, 2
