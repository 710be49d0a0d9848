"""The Python data path: the HTTP server protocol, the inference proxy and the upstream
clients."""
