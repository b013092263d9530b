"""Training and merging: VeRL on GPU clusters, a TRL trainer for CPU and small models, safetensors out."""
