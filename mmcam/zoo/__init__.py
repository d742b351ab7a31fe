"""The shapes world and the bundled models trained on it."""
