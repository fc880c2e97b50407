"""Generation tasks (text, image, audio): transport-free, used by the CLI, the API and the service."""
