"""The Redis link (single, Cluster, Sentinel), what went wrong with it, and the bypass."""
