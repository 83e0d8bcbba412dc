from django.urls import path

from notes import views

urlpatterns = [
    path("", views.home, name="home"),
    path("notes/", views.add_note, name="add_note"),
    path("count/", views.start_word_count, name="start_word_count"),
    path("jobs/<str:result_id>/", views.job, name="job"),
]
