"""The package's top-level conveniences, as the README uses them."""

import subprocess
import sys


def test_load_and_loader_are_reachable_from_the_package_without_eager_imports():
    code = ("import sys, synthdata; assert 'webdataset' not in sys.modules; "
            "assert callable(synthdata.loader.collate) and synthdata.load is synthdata.loader.load")
    subprocess.run([sys.executable, "-c", code], check=True)
