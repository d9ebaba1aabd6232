"""Dagster definitions for the experiment named by TRACE_ASSETS_EXPERIMENT."""

from trace_assets.experiment import data_dir, load_experiment
from trace_assets.project import build_definitions

defs = build_definitions(load_experiment(), data_dir())
