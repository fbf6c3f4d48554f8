"""The problem half of a run: its data (:mod:`.data`, :mod:`.datafile`), its model
(:mod:`.models`), its loss (:mod:`.losses`) and the metrics it is judged by (:mod:`.metrics`)."""
