"""``adlight benchmark TABLE``: every paper's table from one command (runs as an adlight sweep).

``tables`` defines the tables, ``paper_numbers.yaml`` holds the papers' numbers, ``report``
aggregates runs and writes Markdown and CSV, ``command`` is the command line.
"""

from adlight.benchmark.tables import TABLES, Table, get_table

__all__ = ["TABLES", "Table", "get_table"]
