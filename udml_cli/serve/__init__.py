"""``udml serve``: a local web page over an index (search, clusters, duplicates, a run's scores).

``library.py`` is what is served (no web in it), ``app.py`` the FastAPI app and its JSON API,
``page.html`` the one page that uses it.
"""
