"""The statistics the report and the claims share: confidence intervals and tests
(:mod:`.stats`), recipes ranked across problems (:mod:`.ranking`), and their tables and
figures (:mod:`.render`). Light: no torch, Lightning or Hydra."""
