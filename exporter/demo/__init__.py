"""The demo, apart from the product: an upstream that speaks every API family (upstream/), steady
mixed traffic through the proxy (loadgen) and a Slack stand-in that shows what Alertmanager posted
(slack_receiver). `llm-exporter demo`, the compose stack and the tests use them; the proxy does not.
"""
