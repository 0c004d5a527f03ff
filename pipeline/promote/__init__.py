"""``python -m pipeline.promote <preset> <version>``: a person moves alias ``champion``."""
