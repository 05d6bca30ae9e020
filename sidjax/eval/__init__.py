"""Evaluation: HR@K / NDCG@K and sharded evaluation of a split."""
