"""The seed's on_request hook (Sym's custom-integrations guide), in plain Python with
`requests`, against the VictorOps stand-in: the baselines warden's VictorOps plugin is
measured against in BENCHMARKS.md.

    python3 bench/seed_hook.py --url http://127.0.0.1:18089 --api-id demo-id \
        --api-key demo-key --email alice@example.com --iterations 200 [--session]

Without `--session`, as the seed writes it: `requests.get` per call, a new connection each
time. With `--session`, as a careful author would write it: one `requests.Session` for every
call, so the connection is kept alive. The logic is the same either way.
"""

import argparse
import json
import statistics
import time

import requests

IDENTITIES = {}  # stands in for Sym's user identity store
HTTP = requests  # `requests` itself (the seed), or one `requests.Session` (--session)


def victorops_get(base, api_id, api_key, api_path, params=None):
    headers = {
        "Accept": "application/json",
        "X-VO-Api-Id": api_id,
        "X-VO-Api-Key": api_key,
    }
    response = HTTP.get(f"{base}/api-public/{api_path}", headers=headers, params=params)
    body = response.json()
    if not response.ok:
        message = body.get("message", "")
        raise RuntimeError(f"API failed with message: {message}")
    return body


def get_custom_user(email, base, api_id, api_key):
    if email in IDENTITIES:
        return IDENTITIES[email]
    body = victorops_get(base, api_id, api_key, "v2/user", {"email": email})
    for user in body.get("users", []):
        if user["email"].lower() == email.lower():
            IDENTITIES[email] = user["username"]
            return user["username"]
    return None


def is_requester_on_call(email, base, api_id, api_key):
    username = get_custom_user(email, base, api_id, api_key)
    if not username:
        return False
    body = victorops_get(base, api_id, api_key, "v1/oncall/current")
    for team in body.get("teamsOnCall", []):
        for oncall in team["oncallNow"]:
            for user in oncall["users"]:
                if user["onCalluser"]["username"] == username:
                    return True
    return False


def on_request(event, args):
    if is_requester_on_call(event["user"]["email"], args.url, args.api_id, args.api_key):
        return {"decision": "approve", "reason": f"Auto-approved On-call engineer: {event['fields']['reason']}"}
    return {"decision": "continue"}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--api-id", required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--email", default="alice@example.com")
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--session", action="store_true",
                        help="one requests.Session (kept-alive connection) for every call")
    args = parser.parse_args()
    global HTTP
    if args.session:
        HTTP = requests.Session()
    event = {"user": {"email": args.email}, "fields": {"reason": "bench"}}
    on_request(event, args)  # warm up: the identity is stored, as warden's plugin stores it
    samples = []
    decisions = {}
    for _ in range(args.iterations):
        started = time.perf_counter()
        decision = on_request(event, args)
        samples.append((time.perf_counter() - started) * 1e6)
        decisions[decision["decision"]] = decisions.get(decision["decision"], 0) + 1
    samples.sort()
    pick = lambda q: samples[max(0, int(len(samples) * q + 0.999999) - 1)]
    print(json.dumps({
        "client": "requests.Session" if args.session else "requests.get",
        "iterations": len(samples),
        "decisions": decisions,
        "p50_us": pick(0.50),
        "p90_us": pick(0.90),
        "p99_us": pick(0.99),
        "max_us": samples[-1],
        "mean_us": statistics.fmean(samples),
    }, indent=2))


if __name__ == "__main__":
    main()
