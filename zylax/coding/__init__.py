"""Entropy coding and bit packing of the codecs' streams: Huffman, relative sparse
positions, 1- and 2-bit packing. Below the codecs; imports nothing of zylax."""

from zylax.coding import huffman, packing, sparse

__all__ = ["huffman", "packing", "sparse"]
