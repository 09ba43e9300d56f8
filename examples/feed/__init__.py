"""A small recommendation example: a news feed that ranks k of N candidate items per request."""
