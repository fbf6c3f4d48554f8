"""lossbench's Hydra plugins (discovered through the hydra_plugins namespace package):
``hydra/launcher=lossbench`` and ``hydra/sweeper=lossbench``."""
