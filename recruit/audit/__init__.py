"""The trial manager's audit report: the recruitment flow as counts, with small numbers hidden."""

from .report import Report, audit, build_report, render_html, write_report
from .suppress import Rule, Table, protect

__all__ = ["Report", "Rule", "Table", "audit", "build_report", "protect", "render_html", "write_report"]
