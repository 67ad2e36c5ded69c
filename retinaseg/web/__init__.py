"""`retinaseg serve`: a local web app (`pip install 'retinaseg[web]'`). handlers.py does the work as plain
functions over the batch runner; app.py is the Gradio page and its HTTP API."""
