"""Image backends: procedural (default), diffusers, transformers captioners and CLIP, VLM."""
