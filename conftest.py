"""Settings every test directory shares."""

from hypothesis import settings

# No per-example deadline: on a loaded machine (CI shares two cores with the servers the
# tests start) one example of a test that builds clients or talks to a server can take
# longer than hypothesis' 200 ms default, which then fails a correct test.
settings.register_profile("kaneda", deadline=None)
settings.load_profile("kaneda")
