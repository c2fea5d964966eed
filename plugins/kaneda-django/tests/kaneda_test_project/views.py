"""Views of the test project: each exercises one thing the middleware must measure."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator

from django.http import Http404, HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.http import require_POST
from django_kaneda import add_request_tags


def home(request: HttpRequest) -> HttpResponse:
    return HttpResponse("home")


def item(request: HttpRequest, pk: int) -> JsonResponse:
    return JsonResponse({"pk": pk})


def user(request: HttpRequest, name: str) -> HttpResponse:
    return HttpResponse(name)


def archive(request: HttpRequest, year: str) -> HttpResponse:
    return HttpResponse(year)


def boom(request: HttpRequest) -> HttpResponse:
    raise ZeroDivisionError("on purpose")


def missing(request: HttpRequest, pk: int) -> HttpResponse:
    raise Http404(f"no item {pk}")


def counted(request: HttpRequest) -> HttpResponse:
    import django_kaneda  # read at each call: the tests put a fresh LazyMetrics there

    django_kaneda.metrics.increment("home.views")
    return HttpResponse("counted")


def tagged(request: HttpRequest) -> HttpResponse:
    add_request_tags(request, tier="gold")
    return HttpResponse("tagged")


def bad_tag(request: HttpRequest) -> HttpResponse:
    add_request_tags(request, tier=["not", "a", "scalar"])
    return HttpResponse("unreachable")


@require_POST
def order(request: HttpRequest) -> HttpResponse:
    return HttpResponse("created", status=201)


def stream(request: HttpRequest) -> StreamingHttpResponse:
    def chunks() -> Iterator[bytes]:
        for _ in range(3):
            time.sleep(0.05)
            yield b"chunk"

    return StreamingHttpResponse(chunks())


def stream_fails(request: HttpRequest) -> StreamingHttpResponse:
    def chunks() -> Iterator[bytes]:
        yield b"chunk"
        raise ConnectionResetError("the source went away mid-stream")

    return StreamingHttpResponse(chunks())


async def async_stream_fails(request: HttpRequest) -> StreamingHttpResponse:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"chunk"
        raise ConnectionResetError("the source went away mid-stream")

    return StreamingHttpResponse(chunks())


async def async_item(request: HttpRequest, pk: int) -> JsonResponse:
    add_request_tags(request, mode="async")
    return JsonResponse({"pk": pk})
