"""No views: the tests only use the ORM and management commands."""

urlpatterns: list = []
