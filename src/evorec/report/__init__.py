"""HTML reports (Plotly, self-contained) and PNG figures (matplotlib) of training and forecast runs."""

from evorec.report.build import ReportError, build_report

__all__ = ["ReportError", "build_report"]
