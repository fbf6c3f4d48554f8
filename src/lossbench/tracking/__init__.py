"""Everything lossbench reads from and writes to MLflow, one concern per module.

- :mod:`~lossbench.tracking.store`: where the store is, creating it once, reachability, time
  spent in MLflow;
- :mod:`~lossbench.tracking.provenance`: where and by whom a run was trained (tags);
- :mod:`~lossbench.tracking.reaping`: RUNNING runs whose writer is gone;
- :mod:`~lossbench.tracking.writer`: :class:`~lossbench.tracking.writer.Tracker`, writing the
  runs of one experiment;
- :mod:`~lossbench.tracking.payloads`: what is written of a run (params, name, tags, metric
  rows), built apart from writing it;
- :mod:`~lossbench.tracking.write_paths`: how it is written, behind one interface: MLflow's
  API, or batched SQL (:mod:`~lossbench.tracking.sql_batches`, the only module that touches
  MLflow's private store modules), the default where verified;
- :mod:`~lossbench.tracking.records`: reading runs and sweeps back;
- :mod:`~lossbench.tracking.plain_sql`: a verified SQL store read (and the report attached)
  straight, without importing MLflow;
- :mod:`~lossbench.tracking.artifacts`: small files attached to runs;
- :mod:`~lossbench.tracking.sweeps`: a sweep's state file and its parent run;
- :mod:`~lossbench.tracking.datasets`: the dataset inputs of runs.

The read side (``records``, ``plain_sql``, ``store``, ``artifacts``, ``reaping``) imports neither torch,
Lightning nor Hydra, so that light commands (report, ui, reap) start fast.
"""
