-- The findings of a run that fall in one work tile.
SELECT f.id AS finding_id, f.kind, f.feature_id, f.area_m2, f.confidence, f.iou, f.offset_m
FROM finding f
WHERE f.run_id = :run_id AND f.tile_z = :z AND f.tile_x = :x AND f.tile_y = :y
ORDER BY f.id
