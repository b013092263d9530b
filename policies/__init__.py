"""The model that acts: chat formats, tool-call parsers, generation backends, the tiny model."""
