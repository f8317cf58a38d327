-- A run's flagged tiles, worst first (lowest QoD, then most findings), with the
-- verdict a reviewer gave the tile, if any.
SELECT t.z, t.x, t.y, t.shard_id, t.qod, t.iou, t.precision, t.recall, t.n_findings,
       rv.verdict, rv.reviewer, rv.comment, rv.updated_at AS reviewed_at
FROM tile_score t
JOIN run r ON r.id = t.run_id
LEFT JOIN review rv
       ON rv.target = 'tile' AND rv.aoi_id = r.aoi_id
      AND rv.tile_z = t.z AND rv.tile_x = t.x AND rv.tile_y = t.y
WHERE t.run_id = :run_id AND t.flagged
ORDER BY COALESCE(t.qod, 1.0), t.n_findings DESC, t.z, t.x, t.y
LIMIT :limit
