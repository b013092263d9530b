"""Where flows run: work pools, job templates, concurrency limits."""
