"""What an environment is and how it runs: data model, sandbox, episode loop, loaders."""
