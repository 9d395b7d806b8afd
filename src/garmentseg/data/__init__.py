"""Datasets: what a batch is, where its pairs are listed, how it is versioned, and a synthetic studio.

- `contract`: the on-disk contract of a batch (raw/, cutouts/, garments.csv) and its shot names;
- `index`: the dataset index (one row per pair), the garment-level split rule, and `load_dataset`, the one
  way every step reads a dataset;
- `plane`: the data plane, the one door to the dataset: add a batch, publish, check out a data version on
  any node, name what a tree holds (`version_info`, `lineage`);
- `store`: DVC's object store as a library (cache, remote, manifests), behind `plane`;
- `dataset`: the old name of `plane.add_batch`, kept until its callers outside the package move;
- `versioning`: `data_version` and `git_commit`, and the `dvc` CLI for init, status and pull;
- `synth`: the synthetic studio; `preview`: contact sheets; `cli`: the `garmentseg data` commands.
"""
