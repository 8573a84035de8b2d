"""The routes of the HTTP API, one router per resource; each route parses the request, checks
the key's role (evorec.serving.deps) and calls the service layer (evorec.serving.service)."""
