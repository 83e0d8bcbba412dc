"""URLs: the notes app at /, the admin at /admin/, static files at /static/."""

from django.contrib import admin
from django.contrib.staticfiles.views import serve as serve_static
from django.urls import include, path, re_path

urlpatterns = [
    path("", include("notes.urls")),
    path("admin/", admin.site.urls),
    # Only for the example: gunicorn serves the admin's CSS through Django. A real deployment
    # runs collectstatic and lets a web server (or WhiteNoise) serve STATIC_ROOT.
    re_path(r"^static/(?P<path>.*)$", serve_static, {"insecure": True}),
]
