"""WSGI entry point of the test project (``gunicorn kaneda_test_project.wsgi``)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kaneda_test_project.settings")
application = get_wsgi_application()
