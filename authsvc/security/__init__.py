"""Crypto: passwords, signing keys, access and refresh tokens, server secrets.

The JWS format itself lives in `authsvc.jose`, which resource servers import too.
"""
