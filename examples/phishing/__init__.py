"""The running example: a browser's phishing protection."""
