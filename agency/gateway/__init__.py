"""`agency serve`: an OpenAI- and Anthropic-compatible HTTP gateway over one `agency.Agency`."""
