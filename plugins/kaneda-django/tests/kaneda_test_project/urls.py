"""URL patterns of the test project: plain, converters, include, regex, async, i18n."""

from django.conf.urls.i18n import i18n_patterns
from django.urls import include, path, re_path

from . import views

api = [path("users/<str:name>/", views.user)]

urlpatterns = [
    path("", views.home),
    path("items/<int:pk>/", views.item),
    path("api/", include(api)),
    re_path(r"^archive/(?P<year>[0-9]{4})/$", views.archive),
    path("boom/", views.boom),
    path("missing/<int:pk>/", views.missing),
    path("counted/", views.counted),
    path("tagged/", views.tagged),
    path("bad-tag/", views.bad_tag),
    path("orders/", views.order),
    path("stream/", views.stream),
    path("stream-fails/", views.stream_fails),
    path("async-stream-fails/", views.async_stream_fails),
    path("async/<int:pk>/", views.async_item),
    *i18n_patterns(path("about/", views.home)),
]
