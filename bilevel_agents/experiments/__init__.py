"""Experiments: grids × seeds of runs (:mod:`~bilevel_agents.experiments.sweep`), score tables
and plots of results folders (:mod:`~bilevel_agents.experiments.results`), and the paper's
experiments re-run (:mod:`~bilevel_agents.experiments.reproduce`)."""
