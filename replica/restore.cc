#include "replica/restore.h"

#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <map>

#include "replica/file_client.h"

namespace replica {
namespace {

using services::Result;
using services::Status;

struct Catalog {
  // generation -> objects, parsed from their keys
  std::map<std::string, std::vector<std::pair<ParsedKey, ObjectInfo>>> generations;
};

Result<Catalog> ReadCatalog(ReplicaClient* client, const std::string& db) {
  Result<std::vector<ObjectInfo>> objects = client->List(db + "/generations/");
  if (!objects.ok()) return objects.status();
  Catalog c;
  for (ObjectInfo& o : *objects) {
    std::optional<ParsedKey> k = ParseKey(o.key);
    if (!k || k->db != db) continue;
    c.generations[k->generation].emplace_back(*k, std::move(o));
  }
  return c;
}

Result<ObjectHeader> HeaderOf(ReplicaClient* client, const ObjectInfo& o) {
  Result<std::string> data = client->GetPrefix(o.key, kObjectHeaderBytes);
  if (!data.ok()) return data.status();
  return DecodeHeader(*data);
}

std::string Mib(int64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f MiB", static_cast<double>(bytes) / (1 << 20));
  return buf;
}

// Writes the pages of `t` into the open database file and sets its size.
Status ApplyTransaction(int fd, uint32_t page_size, const SegmentTransaction& t,
                        const std::string& path) {
  for (const WalPage& p : t.pages) {
    const off_t off = static_cast<off_t>(p.pgno - 1) * page_size;
    if (pwrite(fd, p.data.data(), p.data.size(), off) != static_cast<ssize_t>(p.data.size())) {
      return Status::IoError("cannot write " + path + ": " + std::strerror(errno));
    }
  }
  // A commit frame carries the database size: pages past it were freed by this transaction.
  if (ftruncate(fd, static_cast<off_t>(t.db_pages) * page_size) != 0) {
    return Status::IoError("cannot truncate " + path + ": " + std::strerror(errno));
  }
  return Status::Ok();
}

Status IntegrityCheck(const std::string& path) {
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE, nullptr);
  std::string result;
  if (rc == SQLITE_OK) {
    sqlite3_stmt* stmt = nullptr;
    // The restored file is a plain database: switch it out of WAL first so checking it does not
    // leave -wal/-shm files next to a temporary name.
    // It stays a rollback-journal file; whoever opens it next (the gateway) turns WAL on.
    sqlite3_exec(db, "PRAGMA journal_mode = DELETE", nullptr, nullptr, nullptr);
    rc = sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &stmt, nullptr);
    while (rc == SQLITE_OK && sqlite3_step(stmt) == SQLITE_ROW) {
      if (!result.empty()) result += "; ";
      result += reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0));
    }
    sqlite3_finalize(stmt);
  }
  const std::string err = db ? sqlite3_errmsg(db) : "out of memory";
  sqlite3_close_v2(db);
  if (rc != SQLITE_OK) return Status::Corruption("cannot check restored database: " + err);
  if (result != "ok") return Status::Corruption("restored database fails integrity_check: " + result);
  return Status::Ok();
}

}  // namespace

Result<std::vector<GenerationInfo>> ListGenerations(ReplicaClient* client, const std::string& db) {
  Result<Catalog> catalog = ReadCatalog(client, db);
  if (!catalog.ok()) return catalog.status();
  std::vector<GenerationInfo> out;
  for (auto& [id, objects] : catalog->generations) {
    GenerationInfo g;
    g.id = id;
    g.created_ms = static_cast<int64_t>(std::strtoull(id.substr(0, 16).c_str(), nullptr, 16));
    bool have_snapshot = false;
    for (const auto& [key, info] : objects) {
      g.bytes += info.size;
      if (key.kind == ObjectKind::kSnapshot) {
        ++g.snapshots;
        if (!have_snapshot || key.first_txid < g.first_txid) {
          g.first_txid = key.first_txid;
          g.first_time_ms = key.time_ms;
          have_snapshot = true;
        }
      } else {
        ++g.segments;
      }
      if (key.last_txid >= g.last_txid) {
        g.last_txid = key.last_txid;
        g.last_time_ms = std::max(g.last_time_ms, key.time_ms);
      }
    }
    out.push_back(std::move(g));
  }
  return out;
}

Result<std::vector<SnapshotInfo>> ListSnapshots(ReplicaClient* client, const std::string& db) {
  Result<Catalog> catalog = ReadCatalog(client, db);
  if (!catalog.ok()) return catalog.status();
  std::vector<SnapshotInfo> out;
  for (auto& [id, objects] : catalog->generations) {
    for (const auto& [key, info] : objects) {
      if (key.kind != ObjectKind::kSnapshot) continue;
      out.push_back({id, key.first_txid, key.time_ms, info.size, info.key});
    }
  }
  return out;
}

Result<RestoreResult> Restore(ReplicaClient* client, const std::string& db,
                              const RestoreTarget& target, const std::string& output,
                              const Progress& progress) {
  if (access(output.c_str(), F_OK) == 0) {
    return Status::AlreadyExists(output + " already exists; restore into a new path (-o) or "
                                 "move it away first");
  }
  Result<Catalog> catalog = ReadCatalog(client, db);
  if (!catalog.ok()) return catalog.status();

  // The newest generation whose first snapshot is at or before the target.
  const std::pair<ParsedKey, ObjectInfo>* snapshot = nullptr;
  std::string generation;
  ObjectHeader snap_header;
  for (auto it = catalog->generations.rbegin(); it != catalog->generations.rend() && !snapshot;
       ++it) {
    std::vector<const std::pair<ParsedKey, ObjectInfo>*> snaps;
    for (const auto& entry : it->second) {
      if (entry.first.kind == ObjectKind::kSnapshot) snaps.push_back(&entry);
    }
    std::sort(snaps.begin(), snaps.end(),
              [](auto* a, auto* b) { return a->first.first_txid > b->first.first_txid; });
    for (auto* s : snaps) {
      if (target.txid && s->first.first_txid > *target.txid) continue;
      if (target.time_ms && s->first.time_ms > *target.time_ms) continue;
      Result<ObjectHeader> h = HeaderOf(client, s->second);
      if (!h.ok()) return h.status().WithContext(s->second.key);
      snapshot = s;
      snap_header = *h;
      generation = it->first;
      break;
    }
  }
  if (!snapshot) {
    return Status::NotFound("the replica holds no snapshot of '" + db + "'" +
                            (target.txid || target.time_ms ? " at or before the target" : ""));
  }

  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(output).parent_path(), ec);
  const std::string temp = output + ".restoring-" + std::to_string(getpid());
  const std::string object_temp = temp + ".object";
  std::filesystem::remove(temp, ec);
  RestoreResult result;
  result.generation = generation;
  auto cleanup = [&] {
    std::filesystem::remove(temp, ec);
    std::filesystem::remove(object_temp, ec);
    std::filesystem::remove(temp + "-wal", ec);
    std::filesystem::remove(temp + "-shm", ec);
  };

  progress(db + ": generation " + generation + ", snapshot at transaction " +
           std::to_string(snap_header.first_txid) + " (" + Mib(snapshot->second.size) + ")");
  Status st = client->GetToFile(snapshot->second.key, object_temp);
  if (st.ok()) {
    Result<ObjectHeader> h = ReadSnapshotFile(object_temp, temp);
    st = h.status();
  }
  std::filesystem::remove(object_temp, ec);
  if (!st.ok()) {
    cleanup();
    return st.WithContext("snapshot " + snapshot->second.key);
  }
  result.txid = snap_header.last_txid;
  result.time_ms = snap_header.last_time_ms;
  result.objects = 1;
  result.bytes = snapshot->second.size;

  // Segments that hold transactions after the snapshot, by first transaction. Segments may
  // overlap: a merge interrupted before it deleted its inputs leaves them beside the merged
  // object, and a gateway that restarted without knowing what was uploaded sends some
  // transactions again. Overlapping segments of one generation hold the same transactions
  // (a transaction id names one commit of one WAL history), so a restore may take each from any.
  std::vector<const std::pair<ParsedKey, ObjectInfo>*> segments;
  uint64_t newest = result.txid;  // the last transaction this generation holds
  for (const auto& entry : catalog->generations[generation]) {
    if (entry.first.kind != ObjectKind::kSegment || entry.first.last_txid <= result.txid) continue;
    segments.push_back(&entry);
    newest = std::max(newest, entry.first.last_txid);
  }
  std::sort(segments.begin(), segments.end(), [](auto* a, auto* b) {
    return a->first.first_txid < b->first.first_txid;
  });
  int fd = open(temp.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) {
    cleanup();
    return Status::IoError("cannot open " + temp + ": " + std::strerror(errno));
  }
  const uint32_t page_size = snap_header.page_size;
  int64_t read_bytes = 0;
  bool reached = target.txid && result.txid >= *target.txid;
  // Of the segments starting at or before the next transaction, the one reaching furthest:
  // it holds the next transaction if any segment does. Between equals, the highest level.
  size_t scanned = 0;
  const std::pair<ParsedKey, ObjectInfo>* furthest = nullptr;
  while (st.ok() && !reached) {
    for (; scanned < segments.size() && segments[scanned]->first.first_txid <= result.txid + 1;
         ++scanned) {
      const ParsedKey& k = segments[scanned]->first;
      if (!furthest || k.last_txid > furthest->first.last_txid ||
          (k.last_txid == furthest->first.last_txid && k.level > furthest->first.level)) {
        furthest = segments[scanned];
      }
    }
    if (!furthest || furthest->first.last_txid <= result.txid) break;  // nothing holds the next
    const std::pair<ParsedKey, ObjectInfo>* pick = furthest;
    Result<std::string> object = client->Get(pick->second.key);
    if (!object.ok()) {
      st = object.status().WithContext(pick->second.key);
      break;
    }
    ++result.objects;
    result.bytes += pick->second.size;
    read_bytes += pick->second.size;
    ObjectHeader header;
    Result<std::vector<SegmentTransaction>> txns = DecodeSegment(*object, &header);
    if (!txns.ok()) {
      st = txns.status().WithContext(pick->second.key);
      break;
    }
    if (header.page_size != page_size) {
      st = Status::Corruption(pick->second.key + " has another page size than its snapshot");
      break;
    }
    const uint64_t before = result.txid;
    for (const SegmentTransaction& t : *txns) {
      if (t.txid <= result.txid) continue;  // already applied from an overlapping segment
      if (t.txid != result.txid + 1) {
        st = Status::Corruption(pick->second.key + " skips from transaction " +
                                std::to_string(result.txid) + " to " + std::to_string(t.txid));
        break;
      }
      if ((target.txid && t.txid > *target.txid) || (target.time_ms && t.time_ms > *target.time_ms)) {
        reached = true;
        break;
      }
      st = ApplyTransaction(fd, page_size, t, temp);
      if (!st.ok()) break;
      result.txid = t.txid;
      result.time_ms = t.time_ms;
      if (target.txid && result.txid == *target.txid) {
        reached = true;
        break;
      }
    }
    if (st.ok() && !reached && result.txid == before) {
      // Its name promised transactions it does not hold.
      st = Status::Corruption(pick->second.key + " holds no transaction after " +
                              std::to_string(before) + " although its name says it ends at " +
                              std::to_string(pick->first.last_txid));
      break;
    }
    const uint64_t span = newest > snap_header.last_txid ? newest - snap_header.last_txid : 1;
    progress(db + ": applied " + pick->second.key.substr(pick->second.key.rfind('/') + 1) + " (" +
             std::to_string(std::min<uint64_t>(
                 100, (result.txid - snap_header.last_txid) * 100 / span)) +
             "% of transactions, " + Mib(read_bytes) + " read)");
  }
  if (st.ok() && !reached && result.txid < newest) {
    // A hole: what comes after it cannot be applied, and stopping here silently would hand back
    // an old state as if it were the latest.
    uint64_t resumes = newest;
    for (auto* s : segments) {
      if (s->first.first_txid > result.txid + 1) resumes = std::min(resumes, s->first.first_txid);
    }
    st = Status::Corruption(
        "the replica of '" + db + "' (generation " + generation + ") is missing transactions " +
        std::to_string(result.txid + 1) + " to " + std::to_string(resumes - 1) +
        " but holds transactions up to " + std::to_string(newest) +
        "; a segment object was deleted or lost. To take the state before the hole, restore with "
        "--txid " + std::to_string(result.txid) + " (or pick another generation's snapshot)");
  }
  if (st.ok() && target.txid && result.txid < *target.txid) {
    st = Status::NotFound("the replica of '" + db + "' (generation " + generation +
                          ") ends at transaction " + std::to_string(result.txid) +
                          ", before the requested " + std::to_string(*target.txid) +
                          "; `gateway generations` lists what each generation holds");
  }
  if (st.ok() && fsync(fd) != 0) st = Status::IoError("cannot fsync " + temp);
  close(fd);
  if (st.ok()) st = IntegrityCheck(temp);
  std::filesystem::remove(temp + "-wal", ec);
  std::filesystem::remove(temp + "-shm", ec);
  if (st.ok() && access(output.c_str(), F_OK) == 0) {
    st = Status::AlreadyExists(output + " appeared during the restore; left untouched");
  }
  if (st.ok()) {
    // Stray -wal/-shm files under the output name would be applied to the restored file.
    std::filesystem::remove(output + "-wal", ec);
    std::filesystem::remove(output + "-shm", ec);
    if (rename(temp.c_str(), output.c_str()) != 0) {
      st = Status::IoError("cannot move the restored file into " + output + ": " +
                           std::strerror(errno));
    } else {
      st = FsyncDir(std::filesystem::path(output).parent_path().string());
    }
  }
  if (!st.ok()) {
    cleanup();
    return st;
  }
  progress(db + ": restored to transaction " + std::to_string(result.txid) + " from " +
           std::to_string(result.objects) + " objects (" + Mib(result.bytes) + ")");
  return result;
}

}  // namespace replica
