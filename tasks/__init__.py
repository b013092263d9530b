"""Prefect tasks: one module per stage; logic lives in envs/, rewards/, policies/."""
