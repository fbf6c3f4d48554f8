"""Run configs: what a run is (:mod:`.spec`) and the checks that refuse bad input before any
training or recording (:mod:`.checks`, :mod:`.keys`, :mod:`.trainer_options`,
:mod:`.recipe_checks`)."""
