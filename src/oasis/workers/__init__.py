"""Background work: a leasing loop over job rows and one runner per job kind (DESIGN.md habit 8)."""
