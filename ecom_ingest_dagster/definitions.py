"""The code location: everything under ``defs/`` (ingest, metrics), loaded by Dagster."""

import warnings
from pathlib import Path

from dagster import ComponentTree, PreviewWarning, definitions

import ecom_ingest_dagster.defs as defs_package


@definitions
def defs():
    # From the module itself, not from a config file found above it: installed from the
    # wheel (the image, any `pip install`), there is no pyproject.toml above the package,
    # and `load_from_defs_folder` fails to find the project. The root is the package's parent,
    # as it was in a checkout.
    with warnings.catch_warnings():
        # Dagster's own loaders are "preview"; load_from_defs_folder silences that the same way.
        warnings.simplefilter("ignore", PreviewWarning)
        return ComponentTree.from_module(
            defs_module=defs_package, project_root=Path(defs_package.__file__).resolve().parent.parent.parent
        ).build_defs()
