"""ASGI entry point of the test project (``uvicorn kaneda_test_project.asgi:application``).

Kaneda's own ``get_asgi_application``: Django's, with the metrics flushed at shutdown.
"""

import os

from django_kaneda.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kaneda_test_project.settings")
application = get_asgi_application()
