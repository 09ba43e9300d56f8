"""Helpers the tests share: servers, worlds, waits, doc commands."""
