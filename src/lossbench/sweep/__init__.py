"""A sweep's runs, fast: composing its jobs (:mod:`.jobs`), which may stack (:mod:`.stacking`),
checking them (:mod:`.checking`), planning stacks (:mod:`.plan`), training and recording them
(:mod:`.run`) on an executor (:mod:`.executors`), live curves (:mod:`.live`,
:mod:`.live_channel`), the audit (:mod:`.audit`) and Optuna studies (:mod:`.hpo`)."""
