"""Background tasks, run by the gateway's worker (``python -m gateway_client.worker``)."""

from django.tasks import task

from notes.models import Note


@task
def count_words() -> dict[str, int]:
    """Count the notes and the words in them.

    Reads the main database from the worker process, so the result reflects every note
    committed before the job ran. Safe to run twice (it only reads), hence ``max_attempts`` 2.
    """
    notes = words = 0
    for text in Note.objects.values_list("text", flat=True).iterator():
        notes += 1
        words += len(text.split())
    return {"notes": notes, "words": words}
