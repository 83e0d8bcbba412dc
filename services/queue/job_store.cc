#include "services/queue/job_store.h"

namespace services::queue {
namespace {

constexpr char kJobColumns[] =
    "id, seq, queue, task, args, kwargs, priority, run_after, max_attempts, attempts, backoff, "
    "state, enqueued_at, started_at, finished_at, last_attempted_at, lease_token, "
    "lease_expires_at, worker_id, return_value, unique_key";

Status BindOptInt(Statement* s, int i, const std::optional<int64_t>& v) {
  return v ? s->BindInt(i, *v) : s->BindNull(i);
}
Status BindOptText(Statement* s, int i, const std::optional<std::string>& v) {
  return v ? s->BindText(i, *v) : s->BindNull(i);
}
std::optional<int64_t> OptInt(const Statement& s, int i) {
  if (s.ColumnIsNull(i)) return std::nullopt;
  return s.ColumnInt(i);
}
std::optional<std::string> OptText(const Statement& s, int i) {
  if (s.ColumnIsNull(i)) return std::nullopt;
  return s.ColumnText(i);
}

Job ReadJob(const Statement& s) {
  Job j;
  j.id = s.ColumnText(0);
  j.seq = s.ColumnInt(1);
  j.queue = s.ColumnText(2);
  j.task = s.ColumnText(3);
  j.args = s.ColumnBlob(4);
  j.kwargs = s.ColumnBlob(5);
  j.priority = s.ColumnInt(6);
  j.run_after_ms = OptInt(s, 7);
  j.max_attempts = s.ColumnInt(8);
  j.attempts = s.ColumnInt(9);
  j.backoff_seconds = s.ColumnDouble(10);
  j.state = ParseState(s.ColumnText(11)).value_or(JobState::kReady);
  j.enqueued_at_ms = s.ColumnInt(12);
  j.started_at_ms = OptInt(s, 13);
  j.finished_at_ms = OptInt(s, 14);
  j.last_attempted_at_ms = OptInt(s, 15);
  j.lease_token = OptText(s, 16);
  j.lease_expires_at_ms = OptInt(s, 17);
  j.worker_id = OptText(s, 18);
  if (!s.ColumnIsNull(19)) j.return_value = s.ColumnBlob(19);
  j.unique_key = OptText(s, 20);
  return j;
}

// Runs a prepared change whose parameters `bind` sets.
template <typename Bind>
Status Change(SqliteDb* db, const std::string& sql, Bind&& bind) {
  Result<Statement*> stmt = db->Cached(sql);
  if (!stmt.ok()) return stmt.status();
  GW_RETURN_IF_ERROR(bind(*stmt));
  Status st = (*stmt)->Run();
  (*stmt)->Reset();
  return st;
}

std::string StateList(const std::vector<JobState>& states) {
  std::string list;
  for (JobState s : states) {
    list += list.empty() ? "'" : ",'";
    list += StateName(s);
    list += "'";
  }
  return list;
}

}  // namespace

Status InsertJob(SqliteDb* db, const Job& j) {
  return Change(
      db,
      std::string("INSERT INTO jobs(") + kJobColumns +
          ") VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17,?18,?19,"
          "?20,?21)",
      [&](Statement* s) {
        GW_RETURN_IF_ERROR(s->BindText(1, j.id));
        GW_RETURN_IF_ERROR(s->BindInt(2, j.seq));
        GW_RETURN_IF_ERROR(s->BindText(3, j.queue));
        GW_RETURN_IF_ERROR(s->BindText(4, j.task));
        GW_RETURN_IF_ERROR(s->BindBlob(5, j.args));
        GW_RETURN_IF_ERROR(s->BindBlob(6, j.kwargs));
        GW_RETURN_IF_ERROR(s->BindInt(7, j.priority));
        GW_RETURN_IF_ERROR(BindOptInt(s, 8, j.run_after_ms));
        GW_RETURN_IF_ERROR(s->BindInt(9, j.max_attempts));
        GW_RETURN_IF_ERROR(s->BindInt(10, j.attempts));
        GW_RETURN_IF_ERROR(s->BindDouble(11, j.backoff_seconds));
        GW_RETURN_IF_ERROR(s->BindText(12, StateName(j.state)));
        GW_RETURN_IF_ERROR(s->BindInt(13, j.enqueued_at_ms));
        GW_RETURN_IF_ERROR(BindOptInt(s, 14, j.started_at_ms));
        GW_RETURN_IF_ERROR(BindOptInt(s, 15, j.finished_at_ms));
        GW_RETURN_IF_ERROR(BindOptInt(s, 16, j.last_attempted_at_ms));
        GW_RETURN_IF_ERROR(BindOptText(s, 17, j.lease_token));
        GW_RETURN_IF_ERROR(BindOptInt(s, 18, j.lease_expires_at_ms));
        GW_RETURN_IF_ERROR(BindOptText(s, 19, j.worker_id));
        GW_RETURN_IF_ERROR(j.return_value ? s->BindBlob(20, *j.return_value) : s->BindNull(20));
        return BindOptText(s, 21, j.unique_key);
      });
}

Status StartAttempt(SqliteDb* db, const Job& j, int64_t now_ms) {
  // The attempt's own record is written when it ends (FinishAttempt): until then the row's
  // worker_id and last_attempted_at say who runs it since when, and GetJob shows it from them.
  return Change(
      db,
      "UPDATE jobs SET state = 'RUNNING', attempts = ?2, lease_token = ?3, lease_expires_at = ?4, "
      "worker_id = ?5, started_at = coalesce(started_at, ?6), last_attempted_at = ?6 WHERE id = ?1",
      [&](Statement* s) {
        GW_RETURN_IF_ERROR(s->BindText(1, j.id));
        GW_RETURN_IF_ERROR(s->BindInt(2, j.attempts));
        GW_RETURN_IF_ERROR(BindOptText(s, 3, j.lease_token));
        GW_RETURN_IF_ERROR(BindOptInt(s, 4, j.lease_expires_at_ms));
        GW_RETURN_IF_ERROR(BindOptText(s, 5, j.worker_id));
        return s->BindInt(6, now_ms);
      });
}

Status ExtendLease(SqliteDb* db, const std::string& id, int64_t expires) {
  return Change(db, "UPDATE jobs SET lease_expires_at = ?2 WHERE id = ?1", [&](Statement* s) {
    GW_RETURN_IF_ERROR(s->BindText(1, id));
    return s->BindInt(2, expires);
  });
}

Status FinishAttempt(SqliteDb* db, const std::string& id, int64_t attempt, int64_t now_ms,
                     const std::string& outcome, const std::string& exception_class_path,
                     const std::string& traceback) {
  // Replaces a record of the same number: one an older gateway wrote when the attempt began,
  // or one from before queue.retry_failed started the count over.
  return Change(db,
                "INSERT OR REPLACE INTO job_attempts(job_id, attempt, worker_id, started_at, "
                "finished_at, outcome, exception_class_path, traceback) "
                "SELECT id, ?2, coalesce(worker_id, ''), coalesce(last_attempted_at, ?3), ?3, ?4, "
                "?5, ?6 FROM jobs WHERE id = ?1",
                [&](Statement* s) {
                  GW_RETURN_IF_ERROR(s->BindText(1, id));
                  GW_RETURN_IF_ERROR(s->BindInt(2, attempt));
                  GW_RETURN_IF_ERROR(s->BindInt(3, now_ms));
                  GW_RETURN_IF_ERROR(s->BindText(4, outcome));
                  GW_RETURN_IF_ERROR(s->BindText(5, exception_class_path));
                  return s->BindText(6, traceback);
                });
}

Status MarkSuccessful(SqliteDb* db, const std::string& id, int64_t now_ms,
                      const std::optional<std::string>& return_value) {
  return Change(db,
                "UPDATE jobs SET state = 'SUCCESSFUL', finished_at = ?2, return_value = ?3, "
                "lease_token = NULL, lease_expires_at = NULL WHERE id = ?1",
                [&](Statement* s) {
                  GW_RETURN_IF_ERROR(s->BindText(1, id));
                  GW_RETURN_IF_ERROR(s->BindInt(2, now_ms));
                  return return_value ? s->BindBlob(3, *return_value) : s->BindNull(3);
                });
}

Status MarkRetry(SqliteDb* db, const std::string& id, int64_t run_after_ms) {
  return Change(db,
                "UPDATE jobs SET state = 'READY', run_after = ?2, lease_token = NULL, "
                "lease_expires_at = NULL WHERE id = ?1",
                [&](Statement* s) {
                  GW_RETURN_IF_ERROR(s->BindText(1, id));
                  return s->BindInt(2, run_after_ms);
                });
}

Status UndoAttempt(SqliteDb* db, const Job& before) {
  return Change(db,
                "UPDATE jobs SET state = 'READY', attempts = ?2, lease_token = NULL, "
                "lease_expires_at = NULL, worker_id = ?3, started_at = ?4, last_attempted_at = ?5 "
                "WHERE id = ?1",
                [&](Statement* s) {
                  GW_RETURN_IF_ERROR(s->BindText(1, before.id));
                  GW_RETURN_IF_ERROR(s->BindInt(2, before.attempts));
                  GW_RETURN_IF_ERROR(BindOptText(s, 3, before.worker_id));
                  GW_RETURN_IF_ERROR(BindOptInt(s, 4, before.started_at_ms));
                  return BindOptInt(s, 5, before.last_attempted_at_ms);
                });
}

Status MarkFinished(SqliteDb* db, const std::string& id, JobState state, int64_t now_ms) {
  return Change(db,
                "UPDATE jobs SET state = ?2, finished_at = ?3, lease_token = NULL, "
                "lease_expires_at = NULL WHERE id = ?1",
                [&](Statement* s) {
                  GW_RETURN_IF_ERROR(s->BindText(1, id));
                  GW_RETURN_IF_ERROR(s->BindText(2, StateName(state)));
                  return s->BindInt(3, now_ms);
                });
}

Result<std::optional<Job>> GetJob(SqliteDb* db, const std::string& id) {
  Result<Statement*> stmt =
      db->Cached(std::string("SELECT ") + kJobColumns + " FROM jobs WHERE id = ?1");
  if (!stmt.ok()) return stmt.status();
  Statement* s = *stmt;
  GW_RETURN_IF_ERROR(s->BindText(1, id));
  Result<bool> row = s->Step();
  if (!row.ok()) return row.status();
  if (!*row) return std::optional<Job>();
  Job job = ReadJob(*s);
  s->Reset();
  Result<Statement*> hist = db->Cached(
      "SELECT attempt, worker_id, started_at, finished_at, outcome, exception_class_path, "
      "traceback FROM job_attempts WHERE job_id = ?1 ORDER BY attempt");
  if (!hist.ok()) return hist.status();
  GW_RETURN_IF_ERROR((*hist)->BindText(1, id));
  for (;;) {
    Result<bool> r = (*hist)->Step();
    if (!r.ok()) return r.status();
    if (!*r) break;
    const Statement& h = **hist;
    const int64_t attempt = h.ColumnInt(0);
    // A running job's current attempt has no record of its own yet (see StartAttempt); a record
    // with its number or later is left from before queue.retry_failed started the count over.
    if (job.state == JobState::kRunning && attempt >= job.attempts) continue;
    job.history.push_back(JobAttempt{attempt, h.ColumnText(1), h.ColumnInt(2), OptInt(h, 3),
                                     h.ColumnText(4), h.ColumnText(5), h.ColumnText(6)});
  }
  (*hist)->Reset();
  if (job.state == JobState::kRunning) {
    job.history.push_back(JobAttempt{job.attempts, job.worker_id.value_or(""),
                                     job.last_attempted_at_ms.value_or(0), std::nullopt, "", "",
                                     ""});
  }
  return std::optional<Job>(std::move(job));
}

Result<std::vector<Job>> LoadActiveJobs(SqliteDb* db) {
  Result<Statement> s = db->Prepare(std::string("SELECT ") + kJobColumns +
                                    " FROM jobs WHERE state IN ('READY', 'RUNNING') ORDER BY seq");
  if (!s.ok()) return s.status();
  std::vector<Job> jobs;
  for (;;) {
    Result<bool> row = s->Step();
    if (!row.ok()) return row.status();
    if (!*row) return jobs;
    jobs.push_back(ReadJob(*s));
  }
}

Result<int64_t> MaxSeq(SqliteDb* db) {
  return db->QueryInt("SELECT coalesce(max(seq), 0) FROM jobs");
}

Status SetPaused(SqliteDb* db, const std::string& queue, bool paused) {
  return Change(db,
                paused ? "INSERT OR IGNORE INTO queue_paused(queue) VALUES (?1)"
                       : "DELETE FROM queue_paused WHERE queue = ?1",
                [&](Statement* s) { return s->BindText(1, queue); });
}

Result<std::set<std::string>> LoadPaused(SqliteDb* db) {
  Result<Statement> s = db->Prepare("SELECT queue FROM queue_paused");
  if (!s.ok()) return s.status();
  std::set<std::string> out;
  for (;;) {
    Result<bool> row = s->Step();
    if (!row.ok()) return row.status();
    if (!*row) return out;
    out.insert(s->ColumnText(0));
  }
}

Result<std::optional<int64_t>> LastSlot(SqliteDb* db, const std::string& name) {
  Result<Statement*> s = db->Cached("SELECT last_slot FROM schedule_slots WHERE name = ?1");
  if (!s.ok()) return s.status();
  GW_RETURN_IF_ERROR((*s)->BindText(1, name));
  Result<bool> row = (*s)->Step();
  if (!row.ok()) return row.status();
  std::optional<int64_t> slot;
  if (*row) slot = (*s)->ColumnInt(0);
  (*s)->Reset();
  return slot;
}

Status SetLastSlot(SqliteDb* db, const std::string& name, int64_t slot_ms) {
  return Change(db, "INSERT OR REPLACE INTO schedule_slots(name, last_slot) VALUES (?1, ?2)",
                [&](Statement* s) {
                  GW_RETURN_IF_ERROR(s->BindText(1, name));
                  return s->BindInt(2, slot_ms);
                });
}

Result<std::vector<Job>> RetryFailed(SqliteDb* db, const std::optional<std::string>& queue,
                                     const std::vector<std::string>& ids) {
  std::string sql =
      std::string("UPDATE jobs SET state = 'READY', attempts = 0, run_after = NULL, ") +
      "finished_at = NULL WHERE state = 'FAILED' AND (unique_key IS NULL OR "
      "unique_key NOT IN (SELECT unique_key FROM jobs WHERE unique_key IS NOT NULL "
      "AND state IN ('READY', 'RUNNING')))";
  if (queue) sql += " AND queue = ?1";
  if (!ids.empty()) {
    sql += " AND id IN (";
    for (size_t i = 0; i < ids.size(); ++i) sql += (i ? ",?" : "?") + std::to_string(i + 2);
    sql += ")";
  }
  sql += std::string(" RETURNING ") + kJobColumns;
  Result<Statement> s = db->Prepare(sql);
  if (!s.ok()) return s.status();
  if (queue) GW_RETURN_IF_ERROR(s->BindText(1, *queue));
  for (size_t i = 0; i < ids.size(); ++i) {
    GW_RETURN_IF_ERROR(s->BindText(static_cast<int>(i + 2), ids[i]));
  }
  std::vector<Job> jobs;
  for (;;) {
    Result<bool> row = s->Step();
    if (!row.ok()) return row.status();
    if (!*row) return jobs;
    jobs.push_back(ReadJob(*s));
  }
}

Result<int64_t> PruneFinished(SqliteDb* db, int64_t cutoff_ms,
                              const std::vector<JobState>& states) {
  Result<Statement> s = db->Prepare("DELETE FROM jobs WHERE finished_at < ?1 AND state IN (" +
                                    StateList(states) + ")");
  if (!s.ok()) return s.status();
  GW_RETURN_IF_ERROR(s->BindInt(1, cutoff_ms));
  GW_RETURN_IF_ERROR(s->Run());
  return db->Changes();
}

Result<std::map<std::string, std::map<JobState, int64_t>>> CountFinished(SqliteDb* db) {
  Result<Statement*> s = db->Cached(
      "SELECT queue, state, count(*) FROM jobs "
      "WHERE state IN ('SUCCESSFUL', 'FAILED', 'CANCELLED') GROUP BY queue, state");
  if (!s.ok()) return s.status();
  std::map<std::string, std::map<JobState, int64_t>> out;
  for (;;) {
    Result<bool> row = (*s)->Step();
    if (!row.ok()) return row.status();
    if (!*row) break;
    std::optional<JobState> state = ParseState((*s)->ColumnText(1));
    if (state) out[(*s)->ColumnText(0)][*state] = (*s)->ColumnInt(2);
  }
  (*s)->Reset();
  return out;
}

}  // namespace services::queue
