-- The audited steps of one AOI and the run that stands for each, newest first.
SELECT step, MAX(id) AS run_id
FROM run
WHERE status = 'succeeded' AND aoi_id = :aoi_id
GROUP BY step
ORDER BY step DESC
