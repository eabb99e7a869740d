"""Saved settings: server profiles and their tokens, sampling presets, prompt templates."""
