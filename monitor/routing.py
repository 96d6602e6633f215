from django.urls import path

from .consumers import RunHistoryConsumer, RunsFeedConsumer

websocket_urlpatterns = [
    path("ws/runs/<str:run_id>/", RunHistoryConsumer.as_asgi()),
    path("ws/monitor/", RunsFeedConsumer.as_asgi()),
]
