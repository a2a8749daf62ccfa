"""oasis: the whole OpenAI API, self-hosted."""

__version__ = "0.1.0"
