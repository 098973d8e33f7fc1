"""What Yandex's management APIs share in the emulators (Audience, Metrica's Logs API):
the OAuth header and the error body."""

from __future__ import annotations

from winback.emulators.base import Reject, Request


def oauth(request: Request, token: str) -> None:
    given = request.headers.get("authorization", "")
    if not given:
        raise yandex_error(401, "unauthorized", "Unauthorized user")
    if given != f"OAuth {token}":
        raise yandex_error(403, "invalid_token", "Invalid oauth_token")


def yandex_error(status: int, error_type: str, message: str) -> Reject:
    """The error body of Yandex's management APIs (Metrica and Audience share it)."""
    return Reject(status, {"errors": [{"error_type": error_type, "message": message}],
                           "code": status, "message": message})
