"""Dagster definitions for the experiment named by TRACE_ASSETS_EXPERIMENT.

The experiment and the files it names are checked first (trace_assets/inputs.py), so a bad input
is the code location's load error, and ``dagster definitions validate`` fails with its message.
"""

from trace_assets.experiment import data_dir
from trace_assets.inputs import load_checked_experiment
from trace_assets.project import build_definitions

defs = build_definitions(load_checked_experiment(), data_dir())
