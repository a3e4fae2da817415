"""aerostack-meter: meter LLM token usage per consumer for the Aerostack Gateway billing API."""

__all__: list[str] = []
