"""Data side of goemo: label taxonomies, readers, download, statistics and batching."""
