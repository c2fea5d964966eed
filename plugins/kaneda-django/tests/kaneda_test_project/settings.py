"""Settings of the test project when a real server runs it (test_django_servers.py).

The in-process tests configure Django with the same urls in their conftest instead.
"""

import os

SECRET_KEY = "kaneda-tests-only"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "kaneda_test_project.urls"
INSTALLED_APPS = ["django_kaneda"]
MIDDLEWARE = ["django_kaneda.middleware.MetricsMiddleware"]
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True
LOGGING_CONFIG = None

KANEDA_URL = os.environ["KANEDA_TEST_URL"]
# Flush only at exit: what the server stores, it stores when each worker shuts down.
KANEDA_OPTIONS = {"flush_interval": 60}
