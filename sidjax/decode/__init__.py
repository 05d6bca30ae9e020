"""Decoding: jitted sampling and constrained SID beam search."""
