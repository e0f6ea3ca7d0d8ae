"""In-process fakes of LLM provider HTTP APIs, for tests (see ``_server.serve``)."""
