"""Datasets: what a batch is, where its pairs are listed, how it is versioned, and a synthetic studio.

- `contract`: the on-disk contract of a batch (raw/, cutouts/, garments.csv) and its shot names;
- `index`: the dataset index (one row per pair), the garment-level split rule, and `load_dataset`, the one
  way every step reads a dataset;
- `dataset`: `add_batch`, adding a validated batch to the DVC-tracked dataset, all or nothing;
- `versioning`: DVC commands, `data_version` and `git_commit`, the lineage every run records;
- `synth`: the synthetic studio; `preview`: contact sheets; `cli`: the `garmentseg data` commands.
"""
