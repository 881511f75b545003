"""One module per DAG stage: plain functions from inputs to outputs, no Snakemake imports.

`STAGE_VERSIONS` is the format version of each stage's output. Rules pass it as a param, so bumping it
(when a stage's output changes meaning or layout) reruns exactly that stage and its descendants, while
edits that do not change outputs (comments, refactors) rerun nothing.
"""

# The Avat3r model's patch size on the input crops: the features stage sizes its grid by it and the shards
# stage checks it. Kept here, not in the features module, so that shards (a CPU rule, no PyTorch) needs no
# torch import.
TOKEN_PATCH = 8

STAGE_VERSIONS: dict[str, int] = {
    "synthetic_capture": 1,
    "capture_index": 2,
    "frames": 1,
    "views": 1,
    "matting": 3,  # 3: plate_difference detects on block means (full-res edges); image arrays zstd level 1,
    # checksummed by stored bytes. 2: manifest format 2 (checksum kinds); dataset leaves blank images to crop
    "crop": 3,  # 3: image arrays zstd level 1, checksummed by stored bytes. 2: manifest format 2 (AVIF arrays
    # checked by stored bytes); summary counts blank images
    "positions": 3,  # 3: image arrays zstd level 1, checksummed by stored bytes. 2: manifest format 2
    "features": 4,  # 4: the extractor's weights fingerprint in the summary. 3: image arrays zstd level 1,
    # checksummed by stored bytes. 2: manifest format 2
    "shards": 3,  # 3: features extractor and expression source in the attributes. 2: manifest format 2
    "dataset_index": 2,  # 2: dataset name, evaluation_only, per-subject features and expression
    "train": 2,  # 2: the model records the data it was trained on (recon/compat.py)
    "evaluate": 2,  # 2: protocol items, reconstruction/animation splits, LPIPS/JOD/AKD/CSIM, csv and html
    "protocol": 1,
    "gather": 1,
}
