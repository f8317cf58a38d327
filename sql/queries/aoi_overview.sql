-- Every AOI: its latest audited step's scores, the change since the step before,
-- the newest run of any status, and the latest step's findings nobody has reviewed.
WITH step_run AS (
    SELECT aoi_id, step, MAX(id) AS run_id
    FROM run
    WHERE status = 'succeeded'
    GROUP BY aoi_id, step
),
ranked AS (
    SELECT sr.aoi_id, sr.step, sr.run_id, sc.mean_qod, sc.completeness, sc.correctness,
           sc.mean_iou, sc.flagged_tile_share, sc.n_tiles, sc.model_trusted, sc.model_oof_iou,
           ROW_NUMBER() OVER (PARTITION BY sr.aoi_id ORDER BY sr.step DESC) AS rn
    FROM step_run sr
    JOIN aoi_score sc ON sc.run_id = sr.run_id
),
last_run AS (
    SELECT aoi_id, id, step, status, started_at, finished_at,
           ROW_NUMBER() OVER (PARTITION BY aoi_id ORDER BY started_at DESC, id DESC) AS rn
    FROM run
),
open_findings AS (
    SELECT f.run_id, COUNT(*) AS n_open
    FROM finding f
    JOIN ranked cur ON cur.run_id = f.run_id AND cur.rn = 1
    WHERE NOT EXISTS (SELECT 1 FROM review rv WHERE rv.finding_id = f.id)
    GROUP BY f.run_id
)
SELECT a.id AS aoi_id,
       a.name AS aoi,
       cur.step AS latest_step,
       cur.run_id AS latest_run_id,
       cur.mean_qod AS qod,
       cur.mean_qod - prev.mean_qod AS qod_change,
       cur.completeness,
       cur.correctness,
       cur.mean_iou,
       cur.flagged_tile_share,
       cur.n_tiles,
       cur.model_trusted,
       cur.model_oof_iou,
       lr.id AS last_run_id,
       lr.step AS last_run_step,
       lr.status AS last_status,
       lr.started_at AS last_started_at,
       lr.finished_at AS last_finished_at,
       COALESCE(o.n_open, 0) AS open_findings
FROM aoi a
LEFT JOIN ranked cur ON cur.aoi_id = a.id AND cur.rn = 1
LEFT JOIN ranked prev ON prev.aoi_id = a.id AND prev.rn = 2
LEFT JOIN last_run lr ON lr.aoi_id = a.id AND lr.rn = 1
LEFT JOIN open_findings o ON o.run_id = cur.run_id
ORDER BY a.name
