"""MAIA's tools: one definition per tool, bound to a subject by a Toolbox; swappable backends."""
