"""The ensemble family: trained presets' class probabilities averaged (family.py)."""
