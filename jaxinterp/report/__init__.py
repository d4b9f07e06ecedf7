"""Reports: standalone HTML pages and atomically written result files."""

from jaxinterp.report.html import Report, Section, atomic_write, write_json

__all__ = ["Report", "Section", "atomic_write", "write_json"]
