"""The audit run: an AOI at a time step, from sources to published results.

One module per job:

* :mod:`~pipeline.run.stages` declares the stage sequence that every runner executes;
  :mod:`~pipeline.run.local` is the one-process runner (``geoaudit audit``), the
  Airflow DAG the distributed one.
* The stages: :mod:`~pipeline.run.fetch`, plan (:mod:`~pipeline.run.lifecycle`),
  :mod:`~pipeline.run.validate`, :mod:`~pipeline.run.shard` (with
  :mod:`~pipeline.run.labels` and :mod:`~pipeline.run.predict`),
  :mod:`~pipeline.run.changes`, :mod:`~pipeline.run.publish`.
* What they share: the typed hand-offs (:mod:`~pipeline.run.handoffs`), the typed
  snapshots and run inputs (:mod:`~pipeline.run.inputs`), the storage layout
  (:mod:`~pipeline.run.layout`) and the run lifecycle (:mod:`~pipeline.run.lifecycle`).
"""
