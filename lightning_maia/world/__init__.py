"""The procedural world: ground-truth scenes, rendering with masks, grammar, datasets, neurons."""
