-- A run's tile scores aggregated into cells of :factor x :factor work tiles
-- (factor 1 = the tiles themselves), for maps of large AOIs.
SELECT x / :factor AS cell_x,
       y / :factor AS cell_y,
       COUNT(*) AS n_tiles,
       AVG(qod) AS qod,
       AVG(iou) AS iou,
       AVG(recall) AS completeness,
       AVG(precision) AS correctness,
       SUM(n_findings) AS n_findings,
       SUM(CASE WHEN flagged THEN 1 ELSE 0 END) AS n_flagged
FROM tile_score
WHERE run_id = :run_id
GROUP BY 1, 2
ORDER BY 1, 2
