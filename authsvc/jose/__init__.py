"""Token formats shared by the server and by resource servers (`authsvc.verifier`).

Only the standard library and `cryptography`: a resource server that installs
`authsvc[verifier]` imports this package without any of the server's dependencies.
"""
