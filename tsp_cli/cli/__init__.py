"""The Typer command-line layer: parses options, renders progress, maps errors to exit codes."""
