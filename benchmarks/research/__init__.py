"""The strategy study: every training strategy on one budget, judged against stand-alone training.

:mod:`~nasfleet.research.comparison` trains and evaluates, :mod:`~nasfleet.research.standalone`
trains the ground truth (cached), :mod:`~nasfleet.research.ranking_stats` has the statistics,
:mod:`~nasfleet.research.report` the tables, plot and page, and
:mod:`~nasfleet.research.strategy_bench` runs it all in one call. The product never imports this
package: ``nasfleet bench`` reaches :mod:`~nasfleet.research.cli` through the ``nasfleet.commands``
entry point.
"""
