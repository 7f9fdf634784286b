"""End-to-end recipes: importable settings that benchmarks, demos and users build on."""
