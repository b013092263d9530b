"""Verifiable rewards: answer matching, per-turn rewards, episode metrics, trainer adapters."""
