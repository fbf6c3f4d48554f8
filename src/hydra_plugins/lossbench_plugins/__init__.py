"""lossbench's Hydra plugins (discovered through the hydra_plugins namespace package):
``hydra/launcher=lossbench``, ``hydra/sweeper=lossbench``, and the sweep callback that
starts and ends a sweep's parent run (``hydra.callbacks.lossbench_sweep``)."""
