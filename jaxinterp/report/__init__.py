"""Reports: standalone HTML pages, and (from :mod:`jaxinterp.files`) atomically written result files."""

from jaxinterp.files import atomic_write, write_json
from jaxinterp.report.html import Report, Section

__all__ = ["Report", "Section", "atomic_write", "write_json"]
