"""Federation routes: `api_urlpatterns` go under /api/, `urlpatterns` at the root."""
from django.urls import path

from federation import api, views

api_urlpatterns = [
    path("org/federation", api.OrgFederation.as_view(), name="org-federation-api"),
]

urlpatterns = [
    path("insights/benchmarks", views.benchmarks, name="benchmarks"),
    path("org/insights", views.insights, name="org-insights"),
]
