"""Neuron naming: probe sets, Network Dissection, caption-based naming, cached concept tables and sentences."""
