"""Agents that study units through the tools: the offline scientist and the VLM agent."""
