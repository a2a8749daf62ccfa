"""The Assistants API: assistants, threads, messages, runs and their steps, and the tool loop that runs execute."""
