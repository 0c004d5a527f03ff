"""The two-run comparison: ``python -m pipeline.compare A B`` (cli.py) and its HTML report
(report.py)."""
