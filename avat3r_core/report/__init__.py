"""Pictures for the Snakemake report (`snakemake report_figures`, then `snakemake --report report.html`).

One module per figure, each a pure function from arrays (or parsed JSON) to a PIL image plus a loader that
reads the stage outputs of one subject or variant:

- `contact_sheet`: input crops next to their mattes (crops.zarr);
- `position_maps`: position maps coloured by head-centric x, y, z next to their confidence (positions.zarr);
- `dome`: the camera dome seen from the front, input-capable cameras and partner views (views.json);
- `training`: training curves (train_log.jsonl) and the metrics table (evaluate/{variant}/metrics.json).

Drawing is PIL only (no matplotlib), so the figures run in the CPU environment (envs/preprocess.yaml).
"""
