"""One module per schema revision. A schema change adds a module here; history is never dropped."""
