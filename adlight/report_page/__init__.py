"""The results page of a test run (``report.html``) and ``adlight compare``'s page of runs.

:mod:`~adlight.report_page.data` builds the JSON a page embeds, :mod:`~.thumbnails` writes
the per-image pictures, :mod:`~.page` writes a run's page, :mod:`~.compare` the page of
several runs; the HTML, CSS and JS are in ``assets/`` and are inlined into each page.
"""

from adlight.report_page.page import PAGE_NAME, RESULTS_NAME, build_run_page

__all__ = ["PAGE_NAME", "RESULTS_NAME", "build_run_page"]
