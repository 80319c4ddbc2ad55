"""``reviewkit.ray.analyze``: the same scoring over many GPUs and pods with Ray Data.

One engine per Ray actor (``Dataset.map_batches`` with an actor pool), each batch scored
by :func:`reviewkit.scoring.score_texts`, so labels and scores are ``reviewkit.analyze``'s.
Ray Data brings the scheduling, the progress bars and the fault tolerance (a crashed actor
is restarted and its batch retried); reviewkit adds an engine that reports its own death,
bad rows that fail alone, and a resumable Parquet output.

    import ray, reviewkit.ray
    ray.init()                                   # or RAY_ADDRESS=... for a running cluster
    out = reviewkit.ray.analyze(df, text="content", concurrency=4)     # DataFrame -> DataFrame
    reviewkit.ray.analyze("reviews/*.parquet", output="s3://bucket/scored/")   # resumable
    reviewkit.ray.analyze(df, aspects=True)      # + analyze's aspect_<name> columns (score_aspects)
    print(reviewkit.ray.last_run())

One module per part: :mod:`.run` (the driver: input, pipeline, results), :mod:`.actor`
(the actor that holds an engine), :mod:`.parts` (the resumable output folder) and
:mod:`.figures` (what a run reports). Importing this package imports pandas and pyarrow;
Ray itself only when a run starts.
"""

from reviewkit.ray.figures import RayRun
from reviewkit.ray.run import DEFAULT_BATCH_SIZE, analyze, last_run

__all__ = ["DEFAULT_BATCH_SIZE", "RayRun", "analyze", "last_run"]
