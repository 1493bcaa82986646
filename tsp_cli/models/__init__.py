"""Which network: the released checkpoints, the download cache, checkpoint loading, the backbones.

Owns everything about weights and architectures: ``registry`` (the 13 released checkpoints as
data, and a user's own models file), ``cache`` (pooch downloads into a hash-checked cache),
``loading`` (reading a checkpoint safely and building its backbone), ``backbones`` (the three
VideoResNet architectures) and ``synthetic`` (seeded checkpoints for tests and demos).

Imports only the foundation (``tsp_cli.errors``, ``settings``, ``atomic``); never the pipeline,
the data steps or the CLI, and never typer or rich.
"""
