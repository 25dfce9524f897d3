"""`hub demo`: the run that feeds a simulated store to a live hub (runner.py). The store
(standins/store.py) and the platforms' webhook shapes (standins/payloads.py) are stand-ins."""
