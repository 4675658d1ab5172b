"""The package's top-level conveniences, as the README uses them."""

import subprocess
import sys


def test_load_and_loader_are_reachable_from_the_package_without_eager_imports():
    code = ("import sys, synthdata; assert 'webdataset' not in sys.modules; "
            "assert callable(synthdata.loader.collate) and synthdata.load is synthdata.loader.load")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_importing_synthdata_and_its_cli_loads_no_heavy_library():
    """`import synthdata` and `synthdata --help` load neither torch, diffusers nor faiss (nor
    prefect, pyarrow, webdataset): the stages load them when they run."""
    heavy = ("torch", "diffusers", "faiss", "prefect", "pyarrow", "webdataset")
    for module in ("synthdata", "synthdata.cli"):
        code = (f"import sys, {module}; loaded = [m for m in {heavy!r} if m in sys.modules]; "
                "assert not loaded, loaded")
        subprocess.run([sys.executable, "-c", code], check=True)


def test_the_public_loader_names_stay_where_users_import_them():
    from synthdata import loader
    from synthdata.dataset import loader as dataset_loader

    assert loader.collate is dataset_loader.collate and loader.load is dataset_loader.load
