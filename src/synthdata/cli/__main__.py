"""`python -m synthdata.cli ...`: the same as the `synthdata` command."""

from synthdata.cli import main

main()
