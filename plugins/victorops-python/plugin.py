"""Sym's VictorOps example ("Custom Integrations" guide, impl.py), ported to warden.

The seed's code is kept as it is, in its order; what changed is marked `# warden:` (the
import lines, the API's base URL) or `# Fix:` (what the seed gets wrong). The guide shows
fragments: the API call's body without its `def` line, `is_requester_on_call` with its
middle elided, and `find_user_by_email` not at all; the lines that complete them are marked
`# Completed:`. docs/porting-a-sym-hook.md puts the two side by side.

The API key is sent sealed: `retrieve_value()` gives a value that, put as it is into the
`X-VO-Api-Key` header, the host fills in. The plugin never holds the key, so the flow runs
with `reveal_secrets = false`.
"""

# Completed: for find_user_by_email, which the guide does not show.
import urllib.parse

# warden: `requests` is warden's, sent through the sandbox's http capability.
import requests

# warden: was `from sym.sdk.annotations import hook` and `from sym.sdk.templates import
# ApprovalTemplate`.
from warden import ApprovalTemplate, hook

# Fix: the seed calls persist_user_identity without importing it.
from warden import persist_user_identity

# warden: the guide calls https://api.victorops.com; the integration's `api_url` setting may
# point elsewhere (a proxy, a stand-in for tests).
DEFAULT_API_URL = "https://api.victorops.com"

# warden: the Rust plugin (plugins/victorops) reads flow vars that narrow whose being on call
# counts; the seed has none, and this port does not read them. A flow that sets one fails
# here rather than approving engineers on call outside the teams or policies it names.
NARROWING_VARS = ("victorops_teams", "victorops_policies")


# Completed: the guide shows this function's body only, with `event`, `api_path` and
# `params` free.
def call_victorops_api(integration, api_path, params=None):
    # Get the custom integration we set up for VictorOps
    # (Completed: the integration is passed in, found by `is_requester_on_call` below.)
    # Get the api key we passed in to the integration with the secret_ids_json setting
    token = integration.settings["secrets"][0].retrieve_value()

    headers = {
        "Accept": "application/json",
        # We used the API ID as our custom integration's external ID
        "X-VO-Api-Id": integration.external_id,
        "X-VO-Api-Key": token,
    }
    # warden: the base URL comes from the integration's `api_url` setting.
    base_url = integration.settings.get("api_url", DEFAULT_API_URL).rstrip("/")
    response = requests.get(
        f"{base_url}/api-public/{api_path}",
        headers=headers,
        params=params,
    )
    # Fix: the seed parses the body before looking at the status, so an error answer that is
    # not JSON (a gateway's HTML page, an empty 502) raised a JSON decoding error that hid
    # what happened. Such an answer's message is now its status.
    try:
        body = response.json()
    except requests.JSONDecodeError:
        if response.ok:
            raise
        body = {"message": f"{response.status_code} {response.reason}"}

    if not response.ok:
        message = body.get("message", "")
        raise RuntimeError(f"API failed with message: {message}")

    # Completed: the guide leaves the function's return implicit.
    return body


def is_requester_on_call(event):
    """Check if the requesting user is currently on call in VictorOps using our custom
    integration"""
    # Completed: the guide elides these lines ("...").
    integration = event.flow.environment.integrations["victorops"]
    username = get_custom_user(event.requester, integration)
    if not username:
        return False
    body = call_victorops_api(integration, "v1/oncall/current")

    for team in body.get("teamsOnCall", []):
        for oncall in team["oncallNow"]:
            for user in oncall["users"]:
                if user["onCalluser"]["username"] == username:
                    return True


# Hooks let you customize workflow behavior running code before or after each
# step in your workflow.
@hook
def on_request(event):
    """If the requester is on-call, auto-approve their requests"""
    # warden: see NARROWING_VARS.
    narrowing = [name for name in NARROWING_VARS if event.flow.vars.get(name, "").strip()]
    if narrowing:
        raise RuntimeError(
            f"flow vars {', '.join(narrowing)} are read by the Rust VictorOps plugin, "
            "not by this port of the seed"
        )
    if is_requester_on_call(event):
        original_reason = event.payload.fields["reason"]
        return ApprovalTemplate.approve(
            # Fix: the seed's reason ends with a stray U+FE0F (an emoji variation selector
            # pasted after the closing brace), invisible but part of every approval's text.
            reason=f"Auto-approved On-call engineer: {original_reason}"
        )


def get_custom_user(user, integration):
    """
    Get the VictorOps username for the given Sym user. Each Sym user may have a separate identity
    stored for each integrated service.

    If the user already has a VictorOps identity, then return it.
    Otherwise, fetch the identity from VictorOps and persist it.

    Note: You can also use the symflow CLI to custom map user identities if necessary.
    """
    identity = user.identity("custom", integration.external_id)
    if identity:
        return identity.user_id

    # Use the VictorOps API to find a matching user
    user_id = find_user_by_email(user.email, integration)
    if user_id:
        # Use the Sym SDK to store the user identity so we don't need to look it up again.
        persist_user_identity(
            email=user.email,
            service="custom",
            service_id=integration.external_id,
            user_id=user_id,
        )

    return user_id


# Completed: the guide uses find_user_by_email without showing it.
def find_user_by_email(email, integration):
    """The username of the VictorOps user whose email is `email`, or None."""
    # VictorOps does not decode an `@` sent as `%40` in `?email=`, which is how
    # `params={"email": email}` would encode it: the query is written here, `@` as is.
    query = urllib.parse.quote(email, safe="@")
    body = call_victorops_api(integration, f"v2/user?email={query}")
    for user in body.get("users", []):
        if user.get("email", "").lower() == email.lower():
            return user["username"]
    return None
