"""The recipe half of a run: its learning-rate schedule (:mod:`.schedules`), its optimizer (any
torch one; :mod:`.param_sets` gives parameter kinds their own), how a stack steps each member
with its own (:mod:`.stacked_optim`, :mod:`.stacked_updates`), and early stopping
(:mod:`.early_stopping`)."""
