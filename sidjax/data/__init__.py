"""Interaction data: readers for the papers' formats, raw Amazon builders, the dataset object."""
