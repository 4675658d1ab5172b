"""Prefect entrypoint: `prefect deploy flows/synthdata_flow.py:synthdata_run` or run directly.

    python flows/synthdata_flow.py specs/demo.yaml
"""

import sys

from synthdata.cli import quiet_environment

quiet_environment()

from synthdata.flow import synthdata_run  # noqa: E402

if __name__ == "__main__":
    print(synthdata_run(sys.argv[1]))
