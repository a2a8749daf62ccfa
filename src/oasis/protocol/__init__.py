"""Wire types: `openapi_types` is generated from the vendored spec (never edit it); `extensions` widens
the few places where the 2.0.0 spec predates what OpenAI's API accepts today."""
