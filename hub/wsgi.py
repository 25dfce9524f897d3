"""The WSGI entry point: `hub.wsgi:app`, what `hub serve` runs in each web process.

Any WSGI server can serve it (`gunicorn hub.wsgi:app`); settings come from the environment.
"""
from hub import create_app
from hub.process import tune_gc

app = create_app()
tune_gc()
