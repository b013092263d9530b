"""Automated environment construction: the paper's five stages as typed, swappable steps.

decompose → document → integrate → scale → deploy. Each stage takes the previous stage's pydantic
object and returns its own (`stages.py`), so a stage can be rerun or replaced alone; a generator
(`template`, offline and seeded, or `llm`, driven by a model) supplies an implementation of each.
"""
