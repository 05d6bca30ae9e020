"""Semantic IDs: item text -> vectors -> residual codes -> SID tokens and the decoding trie."""
