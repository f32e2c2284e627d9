"""WSGI app for bench/policy.py's HTTP run: Levqor plus the same workflows view with the
tenancy layers off, at /bench/plain/workflows. Never deployed."""
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "levqor.settings")
application = get_wsgi_application()

from bench.policy import _plain_view  # noqa: E402  (needs Django set up)
from levqor import urls  # noqa: E402
from tenants.context import build_context  # noqa: E402
from tenants.models import Tenant  # noqa: E402

route, state = _plain_view()
state["ctx"] = build_context(Tenant.objects.get(slug=os.environ["BENCH_TENANT_SLUG"]))
urls.urlpatterns.append(route)
