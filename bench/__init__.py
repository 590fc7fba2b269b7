"""Benchmarks (not tests): ``python -m bench`` or ``make bench``; figures in docs/PERFORMANCE.md.

Each benchmark creates its own throw-away database, loads generated data set-based,
measures, prints Markdown tables and, with ``--write-docs``, refreshes its section
of docs/PERFORMANCE.md. Add one as ``bench/<name>.py`` with a subcommand in
``bench/__main__.py`` and a section name for :func:`bench._docs.write_section`.
"""
