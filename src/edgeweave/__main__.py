"""`python -m edgeweave` is the `edgeweave` command."""

from edgeweave.cli.app import main

main()
