-- How many tiles a run scored and the x/y range they span.
SELECT COUNT(*) AS n_tiles, MIN(z) AS z, MIN(x) AS min_x, MAX(x) AS max_x,
       MIN(y) AS min_y, MAX(y) AS max_y
FROM tile_score
WHERE run_id = :run_id
