"""The test project's URLs: one view that enqueues a task, one that reads a result."""

from django.urls import path
from shop import views

urlpatterns = [
    path("add/", views.enqueue_add),
    path("result/<str:result_id>/", views.result),
]
