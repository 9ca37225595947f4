"""Views that enqueue from a plain (sync) Django request, with no event loop of their own."""

from django.http import HttpRequest, JsonResponse
from django.tasks import default_task_backend

from shop.tasks import add


def enqueue_add(request: HttpRequest) -> JsonResponse:
    """Enqueue add(a, b) from the query string and answer with the task result's ID."""
    result = add.enqueue(int(request.GET["a"]), int(request.GET["b"]))
    return JsonResponse({"id": result.id, "status": str(result.status)})


def result(request: HttpRequest, result_id: str) -> JsonResponse:
    """The task's status as the backend reads it from Redis."""
    found = default_task_backend.get_result(result_id)
    return JsonResponse({"id": found.id, "status": str(found.status)})
