"""`python -m bridge.cli`: the same command line as `issue-bridge`."""

from bridge.cli import main

main()
