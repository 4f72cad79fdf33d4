"""Image datasets (embedded and from local folders) and their federated client partitions."""
