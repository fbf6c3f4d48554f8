"""One fit: the LightningModule (:mod:`.module`) and its data (:mod:`.batches`), a stack's fit
(:mod:`.training`), diagnostics, the member exported as a plain model (:mod:`.model_export`),
and the plain model trained by a plain loop, every run's reference (:mod:`.reference`).
Imports Lightning: only the processes that train import this package."""
