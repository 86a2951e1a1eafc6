"""FastAPI apps (``create_app`` factories) and their shared wire protocol."""
