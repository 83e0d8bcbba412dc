"""The example's pages.

- the home page lists and adds notes (the main database, through the ORM), counts its views
  with ``cache.incr`` and shows statistics computed once and kept with ``cache.get_or_set``;
- "Count words" enqueues the :func:`notes.tasks.count_words` task; its page shows the job's
  state and, once a worker ran it, the result (``Task.get_result``).
"""

from typing import Any

from django.core.cache import cache
from django.db.models import Count, Max
from django.db.models.functions import Length
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.tasks import TaskResultStatus
from django.tasks.exceptions import TaskResultDoesNotExist
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from notes.forms import NoteForm
from notes.models import Note
from notes.tasks import count_words

VIEWS_KEY = "home:views"
STATS_KEY = "notes:stats"
STATS_TIMEOUT = 300
# The result id of the latest word count, so the home page can show it.
LAST_COUNT_KEY = "notes:last-word-count"


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    return _render_home(request, NoteForm())


@require_POST
def add_note(request: HttpRequest) -> HttpResponse:
    form = NoteForm(request.POST)
    if not form.is_valid():
        return _render_home(request, form, status=400)
    form.save()
    # The statistics are out of date now; the next page view recomputes them.
    cache.delete(STATS_KEY)
    return redirect("home")


@require_POST
def start_word_count(request: HttpRequest) -> HttpResponse:
    result = count_words.enqueue()  # stored in the gateway's queue when this returns
    cache.set(LAST_COUNT_KEY, result.id, timeout=None)
    return redirect("job", result_id=result.id)


@require_GET
def job(request: HttpRequest, result_id: str) -> HttpResponse:
    try:
        result = count_words.get_result(result_id)
    except TaskResultDoesNotExist as e:
        raise Http404("no such job") from e
    return render(request, "notes/job.html", {"job": _describe(result)})


def _render_home(request: HttpRequest, form: NoteForm, status: int = 200) -> HttpResponse:
    context = {
        "form": form,
        "notes": Note.objects.all()[:20],
        "views": _count_view(),
        "stats": cache.get_or_set(STATS_KEY, _compute_stats, timeout=STATS_TIMEOUT),
        "last_count": _last_word_count(),
    }
    return render(request, "notes/home.html", context, status=status)


def _count_view() -> int:
    """Add one to the page's view counter and return it (atomic in the gateway)."""
    try:
        return cache.incr(VIEWS_KEY)
    except ValueError:  # the first view, or the entry was evicted: start it at 0
        cache.add(VIEWS_KEY, 0, timeout=None)
        return cache.incr(VIEWS_KEY)


def _compute_stats() -> dict[str, Any]:
    """Statistics over every note: the stand-in for a query too slow to run on each view."""
    stats = Note.objects.aggregate(notes=Count("id"), longest=Max(Length("text")))
    return {**stats, "computed_at": timezone.now()}


def _last_word_count() -> dict[str, Any] | None:
    result_id = cache.get(LAST_COUNT_KEY)
    if result_id is None:
        return None
    try:
        return _describe(count_words.get_result(result_id))
    except TaskResultDoesNotExist:  # pruned from the queue since
        return None


def _describe(result: Any) -> dict[str, Any]:
    """What the templates show of a ``TaskResult`` (its ``return_value`` raises until done)."""
    successful = result.status == TaskResultStatus.SUCCESSFUL
    return {
        "id": result.id,
        "status": str(result.status),
        "finished": result.is_finished,
        "value": result.return_value if successful else None,
        "errors": [error.exception_class_path for error in result.errors],
        "enqueued_at": result.enqueued_at,
        "finished_at": result.finished_at,
        "worker_ids": result.worker_ids,
    }
