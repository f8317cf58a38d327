-- A run's findings, most severe first (area x confidence), with their verdict, if any.
SELECT f.id AS finding_id, f.kind, f.feature_id, f.area_m2, f.confidence, f.iou, f.offset_m,
       f.tile_z, f.tile_x, f.tile_y, f.geometry,
       COALESCE(f.area_m2, 0) * COALESCE(f.confidence, 1) AS severity,
       rv.verdict, rv.reviewer, rv.comment, rv.updated_at AS reviewed_at
FROM finding f
LEFT JOIN review rv ON rv.finding_id = f.id
WHERE f.run_id = :run_id
ORDER BY 12 DESC, f.id
LIMIT :limit
