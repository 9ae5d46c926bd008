"""`mpltool report`: an HTML page with PNG figures of a project's whole lifecycle (report/index.html).

The library entry point is write_report (writer.py); curves.py reads logs/metrics.csv, predictions.py
runs (or reads from its cache) the evaluated network on the test set, figures.py draws with matplotlib,
the optional extra `report`.
"""

from mpltool.report.writer import write_report

__all__ = ["write_report"]
