"""Training-side reading of the preprocessed dataset: one Avat3r sample per item, straight from the shards.

The preprocessing DAG ends with `dataset_index.json` and per-subject stores (crops, positions, features,
shard); :mod:`avat3r_core.recon.data` turns them into the tensors the reconstruction model consumes, with
the paper's k-farthest input-view sampler, so that training code never touches store layouts.
"""
