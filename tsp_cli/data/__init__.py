"""The files around extraction: metadata CSV, standardize, merge (and legacy pickles), status.

These steps prepare videos for ``tsp extract`` or read what it wrote. They may import the
pipeline (for the output store, video probing and the clip plan) and the foundation; never the
CLI, and never typer or rich.
"""
