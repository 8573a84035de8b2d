"""Typed dependencies of the routes: the service of the app, and the API key's role.

Every ``/v1`` route takes one of ``ReadKey``, ``WriteKey`` or ``AdminKey``: the request must
carry ``Authorization: Bearer <key>`` of a key whose role is at least that one (``read`` <
``write`` < ``admin``): 401 without a key or with an unknown one, 403 with a weaker role.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from evorec.serving.eventlog import ROLES
from evorec.serving.service import Service


def get_service(request: Request) -> Service:
    return request.app.state.service


ServiceDep = Annotated[Service, Depends(get_service)]


def role_at_least(needed: str) -> Callable[[Request, Service], str]:
    """A dependency that admits a request whose bearer key has role ``needed`` or above and returns that role."""
    if needed not in ROLES:
        raise ValueError(f"unknown role {needed!r}; roles: {', '.join(ROLES)}")

    def check(request: Request, service: ServiceDep) -> str:
        auth = request.headers.get("authorization", "")
        if not auth.lower().startswith("bearer ") or not auth[7:].strip():
            raise HTTPException(401, "missing API key: send Authorization: Bearer <key>", headers={"WWW-Authenticate": "Bearer"})
        role = service.state.store.role_of(auth[7:].strip())
        if role is None:
            raise HTTPException(401, "unknown API key", headers={"WWW-Authenticate": "Bearer"})
        if ROLES.index(role) < ROLES.index(needed):
            raise HTTPException(403, f"this key's role ({role}) cannot do this; it needs {needed}")
        return role

    return check


ReadKey = Annotated[str, Depends(role_at_least("read"))]
WriteKey = Annotated[str, Depends(role_at_least("write"))]
AdminKey = Annotated[str, Depends(role_at_least("admin"))]
