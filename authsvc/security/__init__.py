"""Crypto: passwords, signing keys, access and refresh tokens, server secrets."""
