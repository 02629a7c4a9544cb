"""Data: the IDX reader, dataset lookup and download, the synthetic problem, splits."""
