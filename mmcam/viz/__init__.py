"""Pictures of explanations: overlays, per-target figures."""
