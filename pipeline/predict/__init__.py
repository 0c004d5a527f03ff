"""Predictions for ordinary picture files: ``python -m pipeline.predict`` (cli.py; the model
from loading.py, its unknown-digit threshold from calibration.py), the MNIST
preprocessing every way in shares (preprocess.py), and accuracy on foreign pictures
(foreign.py)."""
