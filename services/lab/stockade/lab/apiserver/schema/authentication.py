"""authentication.k8s.io/v1 TokenReview and TokenRequest (the serviceaccounts/token subresource)."""

from __future__ import annotations

from .meta import TIME, kind
from .model import BOOL, INT64, STRING, F, atomic, define, list_of, map_of

AUTHENTICATION = "io.k8s.api.authentication.v1."

USER_INFO = define(
    AUTHENTICATION + "UserInfo",
    "Who a token belongs to.",
    F("extra", map_of(list_of(STRING)), "More about the user (the pod and node of a bound token)."),
    atomic("groups", STRING, "The user's groups."),
    F("uid", STRING, "The user's UID."),
    F("username", STRING, "The user's name (system:serviceaccount:<namespace>:<name>)."),
)
TOKEN_REVIEW = kind(
    AUTHENTICATION,
    "authentication.k8s.io",
    "v1",
    "TokenReview",
    "Asks whether a token is valid and whose it is (how the brain checks an agent's token).",
    F(
        "spec",
        define(
            AUTHENTICATION + "TokenReviewSpec",
            "The token to review.",
            atomic("audiences", STRING, "Audiences the token must be for; the API server's when empty."),
            F("token", STRING, "The token.", required=True),
        ),
        "The token to review.",
        required=True,
    ),
    F(
        "status",
        define(
            AUTHENTICATION + "TokenReviewStatus",
            "The answer.",
            atomic("audiences", STRING, "The audiences the token is valid for, of those asked."),
            F("authenticated", BOOL, "Whether the token is valid."),
            F("error", STRING, "Why the token is not valid."),
            F("user", USER_INFO, "The token's user."),
        ),
        "The answer. Read-only.",
    ),
    listed=False,
)
TOKEN_REQUEST = kind(
    AUTHENTICATION,
    "authentication.k8s.io",
    "v1",
    "TokenRequest",
    "Asks for a token of a service account, optionally bound to a pod.",
    F(
        "spec",
        define(
            AUTHENTICATION + "TokenRequestSpec",
            "The token wanted.",
            atomic("audiences", STRING, "Whom the token is for."),
            F(
                "boundObjectRef",
                define(
                    AUTHENTICATION + "BoundObjectReference",
                    "The object a token is bound to: the token is valid while it exists.",
                    F("apiVersion", STRING, "The object's API version."),
                    F("kind", STRING, "Pod or Secret."),
                    F("name", STRING, "The object's name."),
                    F("uid", STRING, "The object's UID."),
                ),
                "The object the token is bound to.",
            ),
            F("expirationSeconds", INT64, "How long the token is valid (at least 600)."),
        ),
        "The token wanted.",
    ),
    F(
        "status",
        define(
            AUTHENTICATION + "TokenRequestStatus",
            "The token.",
            F("expirationTimestamp", TIME, "When the token expires."),
            F("token", STRING, "The token."),
        ),
        "The token. Read-only.",
    ),
    listed=False,
)
