"""Metrics, aggregation over splits and seeds, reports and plots for osrtune experiments.

Submodules are imported explicitly (``results_analysis.metrics``, ``results_analysis.tables``,
``results_analysis.plots``) so that a Ray worker that only needs the metrics does not pay for
pandas and matplotlib.
"""
