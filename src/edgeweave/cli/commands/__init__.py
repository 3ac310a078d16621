"""The options of every `edgeweave` command, one module per group of commands (what a user
types); the wiring behind them is in the `edgeweave.cli.*_cmds` modules."""
