"""The optimiser: learning-rate and momentum schedules, parameter groups (``schedule``) and LARS (``lars``). Imports
no other cgh package."""
