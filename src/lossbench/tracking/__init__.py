"""Everything lossbench reads from and writes to MLflow, one concern per module.

- :mod:`~lossbench.tracking.store`: where the store is, creating it once, reachability, time
  spent in MLflow;
- :mod:`~lossbench.tracking.provenance`: where and by whom a run was trained (tags);
- :mod:`~lossbench.tracking.reaping`: RUNNING runs whose writer is gone;
- :mod:`~lossbench.tracking.writer`: :class:`~lossbench.tracking.writer.Tracker`, writing runs
  through MLflow's client API;
- :mod:`~lossbench.tracking.sql_batches`: the optional batched writer for SQL stores, the only
  module that touches MLflow's private store modules;
- :mod:`~lossbench.tracking.records`: reading runs and sweeps back;
- :mod:`~lossbench.tracking.artifacts`: small files attached to runs;
- :mod:`~lossbench.tracking.sweeps`: a sweep's state file and its parent run.

The read side (``records``, ``store``, ``artifacts``, ``reaping``) imports neither torch,
Lightning nor Hydra, so that light commands (report, ui, reap) start fast.
"""
