"""The attack × defense matrix: its config, the plan (cells, utility measurements, checks), the
scheduler and its executors, the cell store, the merged results and the CI outputs (docs/matrix.md)."""
