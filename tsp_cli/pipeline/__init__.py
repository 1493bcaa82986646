"""From a video path to its feature rows: the extraction pipeline.

``inputs`` (which videos, what they are called), ``video`` (PyAV probing and single-pass
decoding), ``sampling`` (the clip plan as pure functions), ``transform`` (per-frame resize,
normalise, crop), ``clipper`` (a worker's decode loop: frames to clip-ready chunks), ``segments`` (a long
video cut into keyframe-aligned runs of clips for several workers), ``handoff`` (shared-memory
frame slabs and the shared work list), the engine in four parts: ``events`` (what a run reports and
its summary), ``workers`` (the decoding side), ``batcher`` (batches, the model, writes) and
``extraction`` (the public entry points: plan, then run), ``network`` (the model in its fastest
memory format and precision), ``store`` and ``records`` (atomic per-video outputs, manifest, records),
``sharding`` / ``devices`` (splitting work over tasks, choosing the GPU; ``tsp extract --devices``
runs its children from ``tsp_cli.cli.fanout``).

Imports ``tsp_cli.models`` and the foundation; never ``tsp_cli.data`` or the CLI, and never
typer or rich.
"""
