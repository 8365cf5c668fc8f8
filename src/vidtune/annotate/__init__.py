"""Human evaluation: side-by-side GSB studies (TeleBoost §7.1; ALGORITHMS.md §10.1) and human-ranked pairs (§8.2).

A study is a folder ``STUDY/`` holding ``study.db`` (SQLite, WAL) and ``clips/{a,b}/`` (the videos shown), built by
``vidtune annotate create``, served by ``vidtune annotate serve``, summarised by ``vidtune gsb`` and turned into a
Stage III pair file by ``vidtune annotate export-pairs``. Modules: ``store`` (schema, votes, assignments), ``tokens``,
``build`` (rendering or collecting clips), ``server`` (Flask app), ``results`` (GSB tables, chart, export), ``cli``.
"""
