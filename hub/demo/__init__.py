"""`hub demo`: a simulated store (store.py, pure) and the run that feeds it to a live hub
(runner.py). The platforms' webhook shapes live in webhooks/standins/payloads.py."""
