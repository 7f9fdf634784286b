"""Test utilities shipped with the package: a scripted chat-completions server on 127.0.0.1."""
