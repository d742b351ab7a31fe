"""Measuring explanations: localization against ground truth."""
