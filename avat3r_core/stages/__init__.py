"""One module per DAG stage: plain functions from inputs to outputs, no Snakemake imports.

`STAGE_VERSIONS` is the format version of each stage's output. Rules pass it as a param, so bumping it
(when a stage's output changes meaning or layout) reruns exactly that stage and its descendants, while
edits that do not change outputs (comments, refactors) rerun nothing.
"""

STAGE_VERSIONS: dict[str, int] = {
    "synthetic_capture": 1,
    "capture_index": 2,
    "frames": 1,
    "views": 1,
    "matting": 1,
    "crop": 1,
    "positions": 1,
    "features": 1,
    "shards": 1,
    "dataset_index": 1,
    "train": 1,
    "evaluate": 1,
}
