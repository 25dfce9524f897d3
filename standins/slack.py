"""A loopback Slack incoming webhook: records each message staff would see in the channel.

    with SlackWebhook() as slack:
        settings.HUB_ALERT_WEBHOOK_URL = slack.url + "/services/T0/B0/secret"
        slack.messages  # the "text" of each message accepted

Modelled on Slack's incoming webhooks: a POST of a JSON body `{"text": "..."}` posts the
message (https://docs.slack.dev/tools/java-slack-sdk/guides/incoming-webhooks) and is
answered 200 `ok`; a body that is not such JSON is answered 400 `invalid_payload`
(https://api.slack.com/changelog/2016-05-17-changes-to-errors-for-incoming-webhooks).
"""
from __future__ import annotations

from standins.loopback import Call, LoopbackServer


class SlackWebhook(LoopbackServer):
    ROUTES = [("POST", r"/services/[^/]+/[^/]+/[^/]+", "post_message")]

    def __init__(self):
        super().__init__()
        self.messages: list[str] = []

    def error_body(self, status: int, message: str):
        return message  # Slack answers errors with a bare string, not JSON

    def post_message(self, call: Call):
        if not isinstance(call.body, dict) or not isinstance(call.body.get("text"), str) or not call.body["text"]:
            return 400, "invalid_payload", {"Content-Type": "text/plain"}
        self.messages.append(call.body["text"])
        return 200, "ok", {"Content-Type": "text/plain"}
